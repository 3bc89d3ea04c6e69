"""Object storage through fsspec: S3 URLs against a moto server on 127.0.0.1 (started
for this module, stopped at its end). Inputs read from S3 give the statistics
file bytes and output values of the same files read locally, with both engines
(the Dask one on an in-process cluster, which shares this process's S3 settings).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from bnorm_cli.cli.app import app

runner = CliRunner()
BUCKET = "bnorm-test"


def run(args: list[Any], code: int = 0) -> Any:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 and the environment pointing at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    saved = dict(os.environ)
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        )
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()


@pytest.fixture(scope="module")
def client(s3: str) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    # in-process workers (inproc://, no sockets) share this process's S3 settings
    cluster = LocalCluster(n_workers=2, processes=False, dashboard_address="127.0.0.1:0")
    try:
        with Client(cluster) as c:
            yield c
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def files(s3: str, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    import s3fs

    tmp = tmp_path_factory.mktemp("s3")
    rng = np.random.default_rng(5)
    paths = []
    for i, rows in enumerate([1500, 2501]):
        x = rng.normal(1e6, 1e-2, rows)
        x[::7] = np.nan
        frame = pl.DataFrame({"x": x, "k": rng.integers(0, 9, rows), "t": ["s"] * rows})
        path = tmp / f"part-{i}.parquet"
        pq.write_table(frame.to_arrow(), path, row_group_size=600)
        paths.append(path)
    fs = s3fs.S3FileSystem()
    for p in paths:
        fs.put(str(p), f"{BUCKET}/data/{p.name}")
    fs.invalidate_cache()
    return paths


def test_serial_fit_from_s3(tmp_path: Path, files: list[Path]) -> None:
    local, remote = tmp_path / "local.json", tmp_path / "remote.json"
    run(["fit", *files, "-s", local, "-b", "100", "-q"])
    run(["fit", f"s3://{BUCKET}/data/*.parquet", "-s", remote, "-b", "100", "-q"])
    assert remote.read_text() == local.read_text()
    out = tmp_path / "out.parquet"
    run(["transform", f"s3://{BUCKET}/data/part-1.parquet", "-s", local, "-o", out, "-q"])
    expected = tmp_path / "expected.parquet"
    run(["transform", files[1], "-s", local, "-o", expected, "-q"])
    assert_frame_equal(pl.read_parquet(out), pl.read_parquet(expected))


def test_dask_from_and_to_s3(tmp_path: Path, files: list[Path], client: Any) -> None:
    from bnorm_cli.engines import dask_engine

    address = client.scheduler.address
    dask = ["--engine", "dask", "--scheduler", address]
    local, remote = tmp_path / "local.json", tmp_path / "remote.json"
    run(["fit", *files, "-s", local, "-b", "100", "-q"])
    urls = [f"s3://{BUCKET}/data/{p.name}" for p in files]
    old = dask_engine.SPAN_ROWS
    dask_engine.SPAN_ROWS = 1000
    try:
        run(["fit", *urls, "-s", remote, "-b", "100", "-q", *dask])
        assert remote.read_text() == local.read_text()
        target = f"s3://{BUCKET}/out"
        run(["transform", *urls, "-s", local, "-o", target, "-q", *dask])
        refused = run(["transform", *urls, "-s", local, "-o", target, "-q", *dask], 1)
        assert "--overwrite" in refused.stderr
        # the second run replaces the first one's parts
        run(["transform", *urls, "-s", local, "-o", target, "-q", "--overwrite", *dask])
    finally:
        dask_engine.SPAN_ROWS = old
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    found = sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{BUCKET}/out"))
    assert found[0] == "_SUCCESS"  # the commit marker, written last
    names = found[1:]
    assert names == [f"part-{i:05d}.parquet" for i in range(len(names))] and len(names) == 5
    assert not [p for p in fs.ls(BUCKET) if ".bnorm-" in p]
    got = pl.concat([pl.read_parquet(fs.open(f"{BUCKET}/out/{n}", "rb").read()) for n in names])
    expected = tmp_path / "expected.parquet"
    run(["transform", *files, "-s", local, "-o", expected, "-q"])
    assert_frame_equal(got, pl.read_parquet(expected))


def test_missing_object(tmp_path: Path, s3: str) -> None:
    failed = run(["fit", f"s3://{BUCKET}/nope.parquet", "-s", tmp_path / "s.json"], 1)
    assert f"s3://{BUCKET}/nope.parquet" in failed.stderr and "no such object" in failed.stderr
    text = run(["fit", f"s3://{BUCKET}/a.csv", "-s", tmp_path / "s.json"], 1)
    assert "Parquet or Arrow IPC" in text.stderr


# -- https:// inputs (a local HTTP server), other stores, secrets ----------------------------
@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Python's HTTP server on 127.0.0.1 (in a thread) serving a folder of Parquet files."""
    import functools
    import http.server
    import threading

    root = tmp_path_factory.mktemp("http")
    rng = np.random.default_rng(9)
    x = rng.normal(3e3, 1e-4, 4000)
    x[::9] = np.nan
    pq.write_table(
        pl.DataFrame({"x": x, "t": ["h"] * 4000}).to_arrow(), root / "a.parquet", row_group_size=900
    )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_inputs_with_both_engines(tmp_path: Path, http: tuple[str, Path], client: Any) -> None:
    base, root = http
    local = tmp_path / "local.json"
    run(["fit", root / "a.parquet", "-s", local, "-b", "64", "-q"])
    for engine in ([], ["--engine", "dask", "--scheduler", client.scheduler.address]):
        remote = tmp_path / "remote.json"
        run(["fit", f"{base}/a.parquet", "-s", remote, "-b", "64", "-q", *engine])
        assert remote.read_text() == local.read_text()
    out, expected = tmp_path / "out.parquet", tmp_path / "expected.parquet"
    run(["transform", f"{base}/a.parquet", "-s", local, "-o", out, "-q"])
    run(["transform", root / "a.parquet", "-s", local, "-o", expected, "-q"])
    assert_frame_equal(pl.read_parquet(out), pl.read_parquet(expected))


def test_credentials_and_signatures_never_appear(tmp_path: Path, http: tuple[str, Path]) -> None:
    base, _ = http
    host = base.removeprefix("http://")
    secret = f"http://alice:hunter2@{host}/a.parquet?X-Amz-Signature=d34db33f&sig=s3cr3t"
    stats, report = tmp_path / "s.json", tmp_path / "r.md"
    shown = run(["fit", secret, "-s", stats, "-b", "64", "--report", report])
    missing = run(
        ["fit", secret.replace("a.parquet", "gone.parquet"), "-s", tmp_path / "t.json"], 1
    )
    assert "no such object" in missing.stderr and f"http://{host}/gone.parquet" in missing.stderr
    for text in (shown.stderr, missing.stderr, stats.read_text(), report.read_text()):
        for word in ("alice", "hunter2", "d34db33f", "s3cr3t"):
            assert word not in text


@pytest.mark.parametrize(
    ("url", "package", "extra"),
    [
        ("gs://bucket/a.parquet", "gcsfs", "gcs"),
        ("az://container/a.parquet", "adlfs", "azure"),
    ],
)
def test_a_missing_store_package_is_one_line(
    tmp_path: Path, url: str, package: str, extra: str
) -> None:
    import importlib.util

    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    failed = run(["fit", url, "-s", tmp_path / "s.json"], 1)
    assert f"need {package}: pip install 'bnorm[{extra}]'" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1


def test_statistics_file_urls(tmp_path: Path, files: list[Path]) -> None:
    """A statistics file is read from a URL; written only locally (one line says so)."""
    import s3fs

    local = tmp_path / "s.json"
    run(["fit", *files, "-s", local, "-b", "100", "-q"])
    fs = s3fs.S3FileSystem()
    fs.put(str(local), f"{BUCKET}/stats/s.json")
    out, expected = tmp_path / "o.parquet", tmp_path / "e.parquet"
    run(["transform", files[0], "-s", f"s3://{BUCKET}/stats/s.json", "-o", out, "-q"])
    run(["transform", files[0], "-s", local, "-o", expected, "-q"])
    assert_frame_equal(pl.read_parquet(out), pl.read_parquet(expected))
    refused = run(["fit", *files, "-s", f"s3://{BUCKET}/stats/new.json"], 2)
    assert "write it locally" in refused.stderr
    assert not fs.exists(f"{BUCKET}/stats/new.json")
