"""`bnorm_cli.sklearn.BatchNormScaler`: scikit-learn's own estimator checks, and
its numbers against StandardScaler, plain numpy references and `BatchNorm` itself."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import polars as pl
import pytest

sklearn = pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")

from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.linear_model import LinearRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from bnorm_cli import BatchNorm  # noqa: E402
from bnorm_cli.sklearn import BatchNormScaler  # noqa: E402


@parametrize_with_checks(
    [
        BatchNormScaler(),
        BatchNormScaler(batch_size=7, momentum="cumulative", use="running"),
        BatchNormScaler(batch_size=3, eps=0.0, gamma=2.0, beta=-1.0, sketch=False),
        BatchNormScaler(scale="range", feature_range=(-1.0, 1.0)),
        BatchNormScaler(center="none", scale="maxabs", batch_size=5),
    ]
)
def test_sklearn_estimator_checks(estimator: Any, check: Any) -> None:
    check(estimator)


import reference as ref  # noqa: E402


def data(n: int = 203, seed: int = 3) -> np.ndarray:
    """Columns that trap naive scalers: offset, NaN, constant, tiny, huge, integer."""
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [
            rng.normal(1e6, 1e-2, n),
            np.where(rng.random(n) < 0.25, np.nan, rng.standard_t(2, n)),
            np.full(n, 4.25),
            rng.normal(0, 1e-150, n),
            rng.normal(0, 1e150, n),
            rng.integers(-1000, 1000, n).astype(np.float64),
        ]
    )
    return X


def exact_standardized(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std with the mean and variance in exact fractions."""
    from fractions import Fraction

    fx = [Fraction(float(v)) for v in x]
    mean = sum(fx, Fraction(0)) / len(fx)
    var = sum(((v - mean) ** 2 for v in fx), Fraction(0)) / len(fx)
    return np.array([float(v - mean) for v in fx]) / np.sqrt(float(var))


BATCH_SIZES = [1, 2, 7, 50, 203, 245]


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_population_matches_standard_scaler(batch_size: int) -> None:
    X = data()
    mine = BatchNormScaler(batch_size=batch_size, eps=0.0).fit(X)
    theirs = StandardScaler().fit(X)
    np.testing.assert_allclose(mine.mean_, theirs.mean_, rtol=1e-13)
    for j in range(X.shape[1]):  # against exact fractions: within an ulp or so
        p = ref.population(X[:, j])
        assert mine.mean_[j] == pytest.approx(p["mean"], rel=1e-15)
        assert mine.var_[j] == pytest.approx(p["var"], rel=1e-15)
    np.testing.assert_allclose(mine.var_, theirs.var_, rtol=1e-13)
    np.testing.assert_array_equal(mine.n_samples_seen_, theirs.n_samples_seen_)
    np.testing.assert_allclose(mine.scale_, theirs.scale_, rtol=1e-14)
    got, want = mine.transform(X), theirs.transform(X)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    # column 0 (1e6 +- 1e-2) is the trap StandardScaler falls in (its rounded mean_
    # costs ~1e-8 there): that one is checked against exact fractions instead
    np.testing.assert_allclose(got[:, 1:], want[:, 1:], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[:, 0], exact_standardized(X[:, 0]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mine.inverse_transform(got), X, rtol=1e-12, atol=1e-160)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("momentum", [0.1, 0.5, "cumulative"])
def test_running_statistics_match_the_reference(batch_size: int, momentum: Any) -> None:
    X = data()[:, [0, 1, 2, 5]]
    est = BatchNormScaler(batch_size=batch_size, momentum=momentum, use="running").fit(X)
    for j in range(X.shape[1]):
        r = ref.running(X[:, j], batch_size, momentum)
        assert est.running_mean_[j] == pytest.approx(r["running_mean"], rel=1e-12, abs=1e-12)
        assert est.running_var_[j] == pytest.approx(r["running_var"], rel=1e-12, abs=1e-12)
        # the map from the running statistics (an ulp of a 1e6 mean is 1e-8 of its output)
        want = ref.normalize_with(X[:, j], est.running_mean_[j], est.running_var_[j], 1e-5)
        np.testing.assert_allclose(est.transform(X)[:, j], want, rtol=1e-13, atol=1e-13)
    assert est.num_batches_tracked_ == ref.num_batches(X[:, 0], batch_size)


def test_partial_fit_is_one_mini_batch_per_call() -> None:
    X = data()
    est = BatchNormScaler(batch_size=64)
    for i in range(0, len(X), 64):
        est.partial_fit(X[i : i + 64])
    fitted = BatchNormScaler(batch_size=64).fit(X)
    np.testing.assert_array_equal(est.running_mean_, fitted.running_mean_)
    np.testing.assert_array_equal(est.running_var_, fitted.running_var_)
    np.testing.assert_allclose(est.mean_, fitted.mean_, rtol=1e-15)
    np.testing.assert_allclose(est.var_, fitted.var_, rtol=1e-14)
    assert est.num_batches_tracked_ == fitted.num_batches_tracked_ == 4
    refit = BatchNormScaler(batch_size=64).partial_fit(X[:10]).fit(X)  # fit resets
    np.testing.assert_array_equal(refit.running_mean_, fitted.running_mean_)


def test_same_bits_as_batchnorm_itself() -> None:
    """The estimator wraps BatchNorm: its output is BatchNorm's, bit for bit."""
    X = data()
    names = [f"f{j}" for j in range(X.shape[1])]
    frame = pl.DataFrame({n: X[:, j] for j, n in enumerate(names)})
    for use in ("population", "running"):
        model = BatchNorm(batch_size=16, gamma={"f0": 2.0, "*": 0.5}, beta=0.25).fit(frame)
        est = BatchNormScaler(batch_size=16, gamma={"f0": 2.0, "*": 0.5}, beta=0.25, use=use)
        got = est.fit(pd.DataFrame(X, columns=names)).transform(pd.DataFrame(X, columns=names))
        want = model.transform(frame, use=use).to_numpy()  # type: ignore[arg-type]
        np.testing.assert_array_equal(got, want)


def test_numpy_pandas_and_polars_inputs_agree() -> None:
    X = data()
    names = [f"f{j}" for j in range(X.shape[1])]
    outs = []
    for inp in (X, pd.DataFrame(X, columns=names), pl.DataFrame(X, schema=names)):
        est = BatchNormScaler(batch_size=32).fit(inp)
        outs.append(est.transform(inp))
        back = est.inverse_transform(outs[-1])
        np.testing.assert_allclose(back, X, rtol=1e-12, atol=1e-160)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_feature_names_and_set_output() -> None:
    X = data()[:, :3]
    frame = pd.DataFrame(X, columns=["a", "b", "c"], index=np.arange(len(X)) + 10)
    est = BatchNormScaler().fit(frame)
    assert list(est.get_feature_names_out()) == ["a", "b", "c"]
    assert est.model_.columns_ == ["a", "b", "c"]  # the statistics file names them too
    assert list(BatchNormScaler().fit(X).get_feature_names_out()) == ["x0", "x1", "x2"]
    out = est.set_output(transform="pandas").transform(frame)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["a", "b", "c"]
    assert list(out.index) == list(frame.index)
    out = est.set_output(transform="polars").transform(frame)
    assert isinstance(out, pl.DataFrame) and out.columns == ["a", "b", "c"]
    np.testing.assert_array_equal(
        out.to_numpy(), est.set_output(transform="default").transform(frame)
    )
    with pytest.raises(ValueError, match="feature names"):
        est.transform(frame.rename(columns={"a": "z"}))


def test_pipeline_and_column_transformer() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"x": rng.normal(5, 2, 100), "y": rng.normal(-3, 0.5, 100), "k": ["a", "b"] * 50}
    )
    target = 3 * frame["x"] - frame["y"]
    pipe = make_pipeline(
        ColumnTransformer([("bn", BatchNormScaler(batch_size=16), ["x", "y"])]),
        LinearRegression(),
    )
    pipe.fit(frame, target)
    np.testing.assert_allclose(pipe.predict(frame), target, rtol=1e-9)
    ct = ColumnTransformer(
        [("bn", BatchNormScaler(), ["x", "y"])], remainder="passthrough"
    ).set_output(transform="polars")
    out = ct.fit_transform(frame)
    assert isinstance(out, pl.DataFrame)
    assert out.columns == ["bn__x", "bn__y", "remainder__k"]
    np.testing.assert_allclose(
        out["bn__x"].to_numpy(), StandardScaler().fit_transform(frame[["x"]])[:, 0], rtol=1e-5
    )


def test_params_are_stored_unmodified_and_validated_at_fit() -> None:
    gamma = {"a": 2.0, "*": 1.0}
    est = BatchNormScaler(gamma=gamma, momentum="cumulative", batch_size=3)
    assert est.get_params()["gamma"] is gamma
    assert est.get_params()["momentum"] == "cumulative"
    est.set_params(batch_size=0, use="sideways")
    assert est.batch_size == 0
    with pytest.raises(ValueError, match="use must be"):
        est.fit(np.ones((3, 1)))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        est.set_params(use="population").fit(np.ones((3, 1)))
    with pytest.raises(ValueError, match="gamma"):
        BatchNormScaler(gamma={"nope": 2.0}).fit(pd.DataFrame({"a": [1.0, 2.0]}))


def test_pickle_and_save_round_trip(tmp_path: Any) -> None:
    X = data()
    est = BatchNormScaler(batch_size=20).fit(X)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.transform(X), est.transform(X))
    est.model_.save(tmp_path / "stats.json")
    loaded = BatchNorm.load(tmp_path / "stats.json")
    frame = pl.DataFrame({f"x{j}": X[:, j] for j in range(X.shape[1])})
    np.testing.assert_array_equal(loaded.transform(frame).to_numpy(), est.transform(X))


def test_inf_is_refused_nan_is_kept() -> None:
    X = data()
    est = BatchNormScaler().fit(X)
    bad = X.copy()
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        est.transform(bad)
    out = est.transform(X)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(X))


def test_partial_fit_and_inverse_on_frames() -> None:
    X = data()[:, [0, 1, 5]]
    names = ["a", "b", "c"]
    est_pd, est_pl, est_np = (BatchNormScaler(batch_size=50) for _ in range(3))
    for i in range(0, len(X), 50):
        est_pd.partial_fit(pd.DataFrame(X[i : i + 50], columns=names))
        est_pl.partial_fit(pl.DataFrame(X[i : i + 50], schema=names))
        est_np.partial_fit(X[i : i + 50])
    for est in (est_pd, est_pl):
        np.testing.assert_array_equal(est.running_mean_, est_np.running_mean_)
        np.testing.assert_array_equal(est.mean_, est_np.mean_)
        assert list(est.feature_names_in_) == names
    frame = pl.DataFrame(X, schema=names)
    out = est_pl.set_output(transform="polars").transform(frame)
    back = est_pl.inverse_transform(out)
    np.testing.assert_allclose(back, X, rtol=1e-12)
    with pytest.raises(ValueError, match="feature"):
        est_pl.partial_fit(pl.DataFrame({"a": [1.0], "b": [2.0]}))
    with pytest.raises(ValueError, match="expecting 3 features"):
        est_np.partial_fit(np.ones((3, 2)))


@pytest.mark.parametrize("batch_size", [1, 7, 203, 500])
def test_centre_and_scale_choices_match_the_scikit_learn_scalers(batch_size: int) -> None:
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler

    X = data()[:, [1, 2, 5]]  # NaN, constant, integers
    cases = [
        (dict(scale="range", feature_range=(-2.0, 3.0)), MinMaxScaler(feature_range=(-2, 3))),
        (dict(center="none", scale="maxabs"), MaxAbsScaler()),
        (
            dict(center="median", scale="iqr", quantile_range=(10.0, 90.0)),
            RobustScaler(quantile_range=(10, 90)),
        ),
        (dict(center="none", scale="std"), StandardScaler(with_mean=False)),
    ]
    for params, theirs in cases:
        mine = BatchNormScaler(batch_size=batch_size, eps=0.0, **params).fit(X)
        got, want = mine.transform(X), theirs.fit(X).transform(X)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=str(params))
        np.testing.assert_allclose(mine.inverse_transform(got), X, rtol=1e-12, atol=1e-12)
    robust = BatchNormScaler(center="median", scale="iqr")
    with pytest.raises(ValueError, match="partial_fit"):
        robust.partial_fit(X)
    assert robust.get_params()["quantile_range"] is None
