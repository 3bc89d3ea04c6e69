"""Regenerate the sample sensor data: sensors.csv and sensors.parquet.

    python sample_data/make_sample.py

Deterministic (numpy default_rng(2015)); both files hold the same rows.
Nulls are empty fields in the CSV and nulls in the Parquet file; NaN in
vibration_um is the literal ``NaN`` in the CSV and a float NaN in Parquet.
"""

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

SEED = 2015
STATIONS = ["harbor", "airport", "hilltop", "riverside", "depot"]
MINUTES = 1000  # one reading per station per minute -> 5,000 rows
START = np.datetime64("2024-03-01T06:00:00", "s")
OUT_DIR = Path(__file__).resolve().parent


def build() -> pa.Table:
    rng = np.random.default_rng(SEED)
    n_st = len(STATIONS)
    n = MINUTES * n_st
    minute = np.repeat(np.arange(MINUTES), n_st)
    station_idx = np.tile(np.arange(n_st), MINUTES)

    timestamps = (START + minute.astype("timedelta64[m]")).astype(str)
    station = np.array(STATIONS)[station_idx]

    # temperature: per-station offset + daily cycle + noise, roughly N(15, 8)
    st_temp = np.array([-7.0, -2.0, -9.0, 4.0, 8.0])
    daily = 7.0 * np.sin(2 * np.pi * (minute - 180) / 1440.0)
    temperature = 15.0 + st_temp[station_idx] + daily + rng.normal(0.0, 3.0, n)
    temperature = np.round(temperature, 2)

    # pressure: large offset, slow weather drift, station altitude, noise
    drift = np.cumsum(rng.normal(0.0, 18.0, MINUTES))
    drift = 280.0 * (drift - drift.mean()) / drift.std()
    st_press = np.array([40.0, 0.0, -160.0, 25.0, 10.0])
    pressure = 101325.0 + drift[minute] + st_press[station_idx] + rng.normal(0.0, 4.0, n)
    pressure = np.round(pressure, 1)

    humidity = np.round(np.clip(rng.beta(5.0, 3.0, n) - 0.004 * daily, 0.0, 1.0), 3)

    vibration = np.round(rng.lognormal(np.log(1e-3), 0.45, n), 7)

    st_power = np.array([1.2e4, 1.6e4, 0.6e4, 0.9e4, 1.1e4])
    power = np.round(np.maximum(st_power[station_idx] + rng.normal(0.0, 1500.0, n), 0.0), 1)

    count = rng.poisson(12.0, n).astype(np.int64)
    firmware = np.full(n, 7, dtype=np.int64)

    temp_null = rng.random(n) < 0.02
    hum_null = rng.random(n) < 0.02
    power_null = rng.random(n) < 0.01
    vibration[rng.choice(n, size=7, replace=False)] = np.nan  # NaN, not null

    return pa.table(
        {
            "timestamp": pa.array(timestamps.tolist(), type=pa.string()),
            "station": pa.array(station.tolist(), type=pa.string()),
            "temperature_c": pa.array(temperature, type=pa.float64(), mask=temp_null),
            "pressure_pa": pa.array(pressure, type=pa.float64()),
            "humidity": pa.array(humidity, type=pa.float64(), mask=hum_null),
            "vibration_um": pa.array(vibration, type=pa.float64(), from_pandas=False),
            "power_w": pa.array(power, type=pa.float64(), mask=power_null),
            "count": pa.array(count, type=pa.int64()),
            "firmware": pa.array(firmware, type=pa.int64()),
        }
    )


def main() -> None:
    table = build()
    parquet_path = OUT_DIR / "sensors.parquet"
    csv_path = OUT_DIR / "sensors.csv"
    pq.write_table(table, parquet_path, row_group_size=1000)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    frame.write_csv(csv_path)  # null -> empty field, NaN -> "NaN"

    # self-check: both files read back to the same frame, NaN kept distinct
    back_pq = pl.read_parquet(parquet_path)
    back_csv = pl.read_csv(csv_path, schema=frame.schema)
    if not (back_pq.equals(frame) and back_csv.equals(frame)):
        raise SystemExit("sample files do not round-trip")
    vib = back_csv["vibration_um"]
    if vib.is_nan().sum() != 7 or vib.null_count() != 0:
        raise SystemExit("vibration_um NaN/null mix was not preserved")
    for path in (csv_path, parquet_path):
        print(f"{path.name}: {frame.height} rows, {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
