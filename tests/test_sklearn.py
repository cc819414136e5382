"""rmsnorm_cpu.sklearn.RMSNormalizer against scikit-learn itself."""

import doctest

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", minversion="1.6", reason="scikit-learn >= 1.6 is not installed")
rsk = pytest.importorskip("rmsnorm_cpu.sklearn")

from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import check_estimator

import rmsnorm_cpu as rn

RMSNormalizer = rsk.RMSNormalizer


def test_docstring_examples():
    result = doctest.testmod(rsk, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_check_estimator():
    results = check_estimator(RMSNormalizer(), on_skip=None)
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    # Only the array-API check skips: it needs SCIPY_ARRAY_API set before scipy is imported.
    assert skipped <= {"check_array_api_input"}
    assert all(r["status"] in ("passed", "skipped") for r in results)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transform_is_rms_norm_and_preserves_dtype(rng, dtype):
    X = rng.standard_normal((6, 10)).astype(dtype)
    w = rng.uniform(0.5, 1.5, 10)
    Xt = RMSNormalizer(weight=w, groups=2).fit(X).transform(X)
    assert Xt.dtype == dtype
    np.testing.assert_array_equal(Xt, rn.rms_norm(X, w, groups=2))
    assert RMSNormalizer().__sklearn_tags__().transformer_tags.preserves_dtype == ["float64", "float32"]


def test_stateless_integer_input_and_lists():
    Xt = RMSNormalizer(eps=0.0).transform([[3, 4]])  # no fit needed, like Normalizer
    np.testing.assert_allclose(Xt, [[0.848528137, 1.131370850]])
    assert Xt.dtype == np.float64


def test_fit_validates_parameters(rng):
    X = rng.standard_normal((4, 6))
    with pytest.raises(ValueError, match="groups"):
        RMSNormalizer(groups=4).fit(X)
    with pytest.raises(ValueError, match="weight"):
        RMSNormalizer(weight=np.ones(5)).fit(X)
    with pytest.raises(ValueError, match="eps"):
        RMSNormalizer(eps=-1.0).fit(X)
    fitted = RMSNormalizer().fit(X)
    assert fitted.n_features_in_ == 6
    with pytest.raises(ValueError, match="features"):
        fitted.transform(X[:, :5])


def test_feature_names_and_pandas_output(rng):
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    df = pd.DataFrame(rng.standard_normal((5, 3)), columns=["a", "b", "c"], index=list("vwxyz"))
    norm = RMSNormalizer().set_output(transform="pandas")
    out = norm.fit_transform(df)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["a", "b", "c"] and list(out.index) == list("vwxyz")
    np.testing.assert_array_equal(out.to_numpy(), rn.rms_norm(df.to_numpy()))
    assert list(norm.get_feature_names_out()) == ["a", "b", "c"]
    assert list(RMSNormalizer().fit(np.ones((2, 2))).get_feature_names_out()) == ["x0", "x1"]


def test_pipeline_feeds_a_real_estimator(rng):
    # Classes differ in direction, not in scale: normalizing per sample makes them separable.
    n = 200
    y = rng.integers(0, 2, n)
    directions = np.where(y[:, None] == 1, [1.0, 1.0, 0.2, 0.2], [0.2, 0.2, 1.0, 1.0])
    X = directions * rng.uniform(0.1, 100.0, (n, 1)) + 0.01 * rng.standard_normal((n, 4))
    model = make_pipeline(RMSNormalizer(), LogisticRegression()).fit(X, y)
    assert model.score(X, y) > 0.95
    np.testing.assert_array_equal(model[0].transform(X), rn.rms_norm(X))


def test_column_transformer(rng):
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    df = pd.DataFrame(rng.standard_normal((4, 4)), columns=["a", "b", "c", "d"])
    ct = ColumnTransformer([("rms", RMSNormalizer(), ["a", "b", "c"])], remainder="passthrough")
    out = ct.fit_transform(df)
    np.testing.assert_array_equal(out[:, :3], rn.rms_norm(df[["a", "b", "c"]].to_numpy()))
    np.testing.assert_array_equal(out[:, 3], df["d"].to_numpy())
    assert list(ct.get_feature_names_out()) == ["rms__a", "rms__b", "rms__c", "remainder__d"]
