"""scikit-learn adapter: ``RMSNormalizer``, a stateless transformer (needs scikit-learn >= 1.6)."""

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import validate_data

from . import _api, _spec

__all__ = ["RMSNormalizer"]


class RMSNormalizer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Scale each sample to unit root mean square, like ``sklearn.preprocessing.Normalizer``.

    ``transform(X)`` is :func:`rmsnorm_cpu.rms_norm` of each row of ``X``
    (``x / sqrt(mean(x**2) + eps) * weight``).  Stateless: ``fit`` only
    validates the parameters and records ``n_features_in_`` (and
    ``feature_names_in_``).  float32 and float64 are preserved; other input
    is converted to float64.

    Parameters
    ----------
    axis : int or tuple of ints, default -1
        As in :func:`rmsnorm_cpu.rms_norm`; -1 (or 1) normalizes each sample.
    eps : float, default 1e-6
    groups : int, default 1
        Normalize equal contiguous groups of features on their own.
    weight : array-like of shape (n_features,), optional
        Per-feature scale applied after normalizing.
    eps_mode : {"sqrt", "add", "clamp"}, default "sqrt"
    weight_offset : float, default 0.0

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str, when ``X`` has string column names

    Examples
    --------
    >>> import numpy as np
    >>> from rmsnorm_cpu.sklearn import RMSNormalizer
    >>> RMSNormalizer(eps=0.0).fit_transform(np.array([[3.0, 4.0]]))
    array([[0.84852814, 1.13137085]])
    """

    def __init__(self, *, axis=-1, eps=1e-6, groups=1, weight=None, eps_mode="sqrt", weight_offset=0.0):
        self.axis = axis
        self.eps = eps
        self.groups = groups
        self.weight = weight
        self.eps_mode = eps_mode
        self.weight_offset = weight_offset

    def _normalize(self, X):
        return _api.rms_norm(X, self.weight, axis=self.axis, eps=self.eps, groups=self.groups, eps_mode=self.eps_mode,
                             weight_offset=self.weight_offset)

    def fit(self, X, y=None):
        """Validate the parameters against ``X`` and record ``n_features_in_``."""
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        # Raise now what transform would raise for these parameters.
        _spec.check_call(X.shape, X.dtype, self.weight, axis=self.axis, eps=self.eps, groups=self.groups,
                         eps_mode=self.eps_mode, weight_offset=self.weight_offset)
        return self

    def transform(self, X, copy=None):
        """Normalize each sample of ``X``; ``copy`` is accepted for Normalizer
        compatibility (a new array is always returned)."""
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self._normalize(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
