r"""The formulas of back-propagation, one function each.

Every function here is one line of the lecture (``docs/backprop.md`` derives them),
written for a batch: rows are samples, so the lecture's column vectors
:math:`x^{(l)}` become the rows of ``X`` and the products flip sides.  The layers in
:mod:`portprop.layers` and :mod:`portprop.losses` only call these.

Each function takes the array namespace ``xp`` first when it needs one (or only a
``sum``, :meth:`portprop.Backend.sum`, where that is all it needs); arrays are never
created here without ``dtype=`` and ``device=`` taken from an input.

The functions of a training step also take ``out=`` and ``ops=``: given an array
``out`` (of the result's shape and dtype, from the step before: a workspace, see
:meth:`portprop.Module.use_workspaces`), the result is written into it through the
kernels of the backend ``ops`` (:meth:`portprop.Backend.matmul_into`,
:meth:`~portprop.Backend.multiply_into`), the same operations, and so the same bits,
as without.  ``out`` is never an input of a product, but may be the gradient that an
elementwise ``*_backward`` multiplies (it is then updated in place).

==========================================================================  =========================
lecture                                                                     function
==========================================================================  =========================
:math:`s = w x + b`                                                         :func:`linear`
:math:`\partial\ell/\partial w = (\partial\ell/\partial s)\, x^T`           :func:`weight_gradient`
:math:`\partial\ell/\partial b = \partial\ell/\partial s`                   :func:`bias_gradient`
:math:`\partial\ell/\partial x = w^T\,\partial\ell/\partial s`              :func:`input_gradient`
:math:`\partial\ell/\partial s = \partial\ell/\partial x \odot \sigma'(s)`  ``*_backward``
:math:`y = m \odot x / (1 - p)` (dropout)                                   :func:`dropout`
:math:`\mathrm{erf}`, :math:`\mathrm{erfc}` (for GELU)                      :func:`erf_and_erfc`
GELU, SiLU, ELU, softplus, log-softmax, ``*_backward``                      :func:`gelu`, ...
:math:`\hat x = (x - \mu) / \sqrt{v + \epsilon}` (layer norm)               :func:`layer_norm`
:math:`y = \hat x \odot \gamma + \beta`                                     :func:`affine`
:math:`r(g - \bar g - \hat x\,\overline{g \hat x})` (layer norm backward)   :func:`layer_norm_backward`
:math:`T_{n,k}` (class weights, smoothing, ignore_index)                    :func:`class_targets`
:math:`\nabla_1 \ell`                                                       ``*_loss_gradient``
:math:`w \leftarrow w - \eta\,\partial\ell/\partial w`                      :meth:`portprop.SGD.step`
==========================================================================  =========================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portprop.backend import Backend

__all__ = [
    "bce_with_logits_loss",
    "bce_with_logits_loss_gradient",
    "bias_gradient",
    "cross_entropy_loss",
    "cross_entropy_loss_gradient",
    "dropout",
    "dropout_backward",
    "identity_backward",
    "input_gradient",
    "leaky_relu",
    "leaky_relu_backward",
    "linear",
    "log_sum_exp",
    "mse_loss",
    "mse_loss_gradient",
    "one_hot",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "tanh",
    "tanh_backward",
    "weight_gradient",
]

Array = Any


# ---- the linear map s = w x + b and its three derivatives -------------------------------


def linear(
    X: Array, W: Array, b: Array | None, *, out: Array | None = None, ops: Backend | None = None
) -> Array:
    r"""Forward pass of a layer, :math:`s^{(l)} = w^{(l)} x^{(l-1)} + b^{(l)}`.

    ``(batch, in) , (out, in) , (out,) -> (batch, out)``: ``S = X @ W.T + b`` (without
    the bias when ``b`` is ``None``).
    """
    S = X @ W.T if out is None or ops is None else ops.matmul_into(X, W.T, out)
    if b is not None:
        S += b
    return S


def weight_gradient(
    dl_ds: Array, X: Array, *, out: Array | None = None, ops: Backend | None = None
) -> Array:
    r""":math:`[\partial\ell/\partial w^{(l)}] = [\partial\ell/\partial s^{(l)}]\,(x^{(l-1)})^T`,
    summed over the batch.

    ``(batch, out) , (batch, in) -> (out, in)``: ``dl_ds.T @ X``.
    """
    return dl_ds.T @ X if out is None or ops is None else ops.matmul_into(dl_ds.T, X, out)


def bias_gradient(sum: Callable[..., Array], dl_ds: Array) -> Array:
    r""":math:`[\partial\ell/\partial b^{(l)}] = [\partial\ell/\partial s^{(l)}]`, summed over
    the batch.

    ``(batch, out) -> (out,)``.  ``sum`` is the namespace's ``xp.sum`` or an equivalent
    kernel, such as :meth:`portprop.Backend.sum` (the layers pass that one).
    """
    return sum(dl_ds, axis=0)


def input_gradient(
    dl_ds: Array, W: Array, *, out: Array | None = None, ops: Backend | None = None
) -> Array:
    r""":math:`[\partial\ell/\partial x^{(l-1)}] = (w^{(l)})^T\,[\partial\ell/\partial s^{(l)}]`.

    ``(batch, out) , (out, in) -> (batch, in)``: ``dl_ds @ W``.
    """
    return dl_ds @ W if out is None or ops is None else ops.matmul_into(dl_ds, W, out)


# ---- activations: sigma and dl/ds = dl/dx * sigma'(s) -----------------------------------


def tanh(xp: Any, S: Array) -> Array:
    r""":math:`\sigma(s) = \tanh s`."""
    return xp.tanh(S)


def tanh_backward(
    dl_dx: Array, Y: Array, *, out: Array | None = None, ops: Backend | None = None
) -> Array:
    r""":math:`\partial\ell/\partial s = \partial\ell/\partial x \odot (1 - \tanh^2 s)`, from
    the output ``Y = tanh(S)`` that the forward pass kept."""
    slope = 1.0 - Y * Y
    return dl_dx * slope if out is None or ops is None else ops.multiply_into(dl_dx, slope, out)


def sigmoid(xp: Any, S: Array) -> Array:
    r""":math:`\sigma(s) = 1 / (1 + e^{-s})`, computed without overflow for any ``s``:
    :math:`e^{-|s|}` never exceeds 1."""
    e = xp.exp(-xp.abs(S))
    return xp.where(S >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_backward(
    dl_dx: Array, Y: Array, *, out: Array | None = None, ops: Backend | None = None
) -> Array:
    r""":math:`\partial\ell/\partial s = \partial\ell/\partial x \odot \sigma(s)(1-\sigma(s))`,
    from the output ``Y`` that the forward pass kept."""
    slope = Y * (1.0 - Y)
    return dl_dx * slope if out is None or ops is None else ops.multiply_into(dl_dx, slope, out)


def relu(
    xp: Any, S: Array, *, out: Array | None = None, ops: Backend | None = None
) -> tuple[Array, Array]:
    r""":math:`\sigma(s) = \max(0, s)`, as :math:`s \odot \sigma'(s)`; also returns
    :math:`\sigma'(s) = 1[s > 0]` (zeros and ones of ``S``'s dtype), which is all the
    backward pass needs.

    A product with a 0/1 array, not ``where``: selecting by an unpredictable mask is
    several times slower than a multiplication on CPUs.
    """
    mask = xp.astype(S > 0, S.dtype)
    # (an input of -inf gives 0 * -inf = NaN, as NaN gives NaN)
    return (S * mask if out is None or ops is None else ops.multiply_into(S, mask, out)), mask


def relu_backward(
    dl_dx: Array, mask: Array, *, out: Array | None = None, ops: Backend | None = None
) -> Array:
    r""":math:`\partial\ell/\partial s = \partial\ell/\partial x \odot 1[s > 0]`."""
    return dl_dx * mask if out is None or ops is None else ops.multiply_into(dl_dx, mask, out)


def leaky_relu(
    xp: Any,
    S: Array,
    negative_slope: float,
    *,
    out: Array | None = None,
    ops: Backend | None = None,
) -> tuple[Array, Array]:
    r""":math:`\sigma(s) = s` for :math:`s > 0`, :math:`a s` otherwise, as
    :math:`s \odot \sigma'(s)`; also returns :math:`\sigma'(s) = 1[s>0] + a\,1[s\le0]`."""
    slope = xp.astype(S > 0, S.dtype)
    slope *= 1.0 - negative_slope
    slope += negative_slope
    return (S * slope if out is None or ops is None else ops.multiply_into(S, slope, out)), slope


def leaky_relu_backward(
    dl_dx: Array, slope: Array, *, out: Array | None = None, ops: Backend | None = None
) -> Array:
    r""":math:`\partial\ell/\partial s = \partial\ell/\partial x \odot (1[s>0] + a\,1[s\le0])`."""
    return dl_dx * slope if out is None or ops is None else ops.multiply_into(dl_dx, slope, out)


def identity_backward(dl_dx: Array) -> Array:
    r""":math:`\sigma(s) = s`, so :math:`\partial\ell/\partial s = \partial\ell/\partial x`."""
    return dl_dx


# ---- losses and nabla_1 l ---------------------------------------------------------------


def mse_loss(
    sum: Callable[..., Array], pred: Array, target: Array, scale: float, *, reduce: bool = True
) -> tuple[Array, Array]:
    r""":math:`\ell = c \sum (f(x) - y)^2`; returns the loss and the residual kept for the
    gradient.  ``scale`` is :math:`c`: 1 for ``"sum"``, ``1/numel`` for ``"mean"``.
    ``sum`` is the namespace's ``xp.sum`` or an equivalent kernel, such as
    :meth:`portprop.Backend.sum` (the losses pass that one).  With ``reduce=False``
    (``reduction="none"``) the terms of the sum, each times :math:`c`; so for every loss
    below."""
    diff = pred - target
    terms = diff * diff
    return (sum(terms) if reduce else terms) * scale, diff


def mse_loss_gradient(diff: Array, scale: Any) -> Array:
    r""":math:`\nabla_1 \ell = 2c\,(f(x) - y)`.

    As for every loss gradient below, ``scale`` :math:`c` may be an array that
    broadcasts against the result: with ``reduction="none"`` it is the ``grad_output``
    :math:`G` of the per-element (or per-sample, ``(batch, 1)``) losses, and the result
    the gradient of :math:`\sum G \odot \ell`."""
    return diff * (2.0 * scale)


def log_sum_exp(xp: Any, Z: Array) -> Array:
    r""":math:`\log \sum_k e^{z_k}` per row, as :math:`m + \log \sum_k e^{z_k - m}` with
    :math:`m = \max_k z_k`, so that no exponential overflows.  ``(batch, C) -> (batch, 1)``."""
    m = xp.max(Z, axis=1, keepdims=True)
    return m + xp.log(xp.sum(xp.exp(Z - m), axis=1, keepdims=True))


def one_hot(xp: Any, labels: Array, num_classes: int, dtype: Any) -> Array:
    """``(batch,)`` integer labels -> ``(batch, num_classes)`` rows of zeros with a one."""
    # getattr: a JAX tracer (inside a compiled step) has no device
    classes = xp.arange(num_classes, dtype=labels.dtype, device=getattr(labels, "device", None))
    return xp.astype(labels[:, None] == classes[None, :], dtype)


def softmax(xp: Any, Z: Array) -> Array:
    r""":math:`e^{z_k} / \sum_j e^{z_j}` per row, as :math:`e^{z_k - m} / \sum_j e^{z_j - m}`
    with :math:`m = \max_j z_j`: no exponential overflows, the largest is 1, and a
    probability that underflows is exactly 0, never NaN.  ``(batch, C) -> (batch, C)``."""
    e = xp.exp(Z - xp.max(Z, axis=1, keepdims=True))
    return e / xp.sum(e, axis=1, keepdims=True)


def cross_entropy_loss(
    xp: Any, logits: Array, targets_one_hot: Array, scale: float, *, reduce: bool = True
) -> tuple[Array, Array]:
    r""":math:`\ell = c \sum_n (\log \sum_k e^{z_{n,k}} - z_{n,y_n})`; returns the loss and
    the softmax probabilities :math:`p` kept for the gradient.

    With the row maxima :math:`m_n` subtracted first, :math:`u = z - m`, each term is
    :math:`\log \sum_k e^{u_{n,k}} - u_{n,y_n}`, a sum of two numbers :math:`\ge 0`: no
    exponential overflows, and large logits (:math:`\pm 10^4` in float32) lose no digits
    to cancellation, as :math:`\mathrm{lse}(z) - z_{y}` would.  The probabilities reuse
    the exponentials, :math:`p = e^{u} / \sum_k e^{u_k}`.
    """
    u = logits - xp.max(logits, axis=1, keepdims=True)
    e = xp.exp(u)
    s = xp.sum(e, axis=1, keepdims=True)
    if not reduce:  # per sample: (batch,)
        return (xp.log(s[:, 0]) - xp.sum(u * targets_one_hot, axis=1)) * scale, e / s
    loss = (xp.sum(xp.log(s)) - xp.sum(u * targets_one_hot)) * scale
    return loss, e / s


def cross_entropy_loss_gradient(probs: Array, targets_one_hot: Array, scale: Any) -> Array:
    r""":math:`\nabla_1 \ell = c\,(\mathrm{softmax}(z) - \mathrm{onehot}(y))`: the softmax
    and the log-sum-exp differentiated together."""
    return (probs - targets_one_hot) * scale


def bce_with_logits_loss(
    xp: Any, logits: Array, target: Array, scale: float, *, reduce: bool = True
) -> Array:
    r""":math:`\ell = c \sum \big(\max(z,0) - z y + \log(1 + e^{-|z|})\big)`, the binary
    cross-entropy of :math:`\sigma(z)` written so that no exponential overflows.

    :math:`\max(z,0) - z y` is computed as :math:`z (1 - y)` for :math:`z > 0` and
    :math:`-z y` otherwise: for targets in :math:`[0, 1]` no digits are lost to
    cancellation at large logits, and targets of exactly 0 or 1 give no NaN.
    """
    terms = xp.where(logits > 0, logits * (1.0 - target), -logits * target)
    terms = terms + xp.log1p(xp.exp(-xp.abs(logits)))
    return (xp.sum(terms) if reduce else terms) * scale


def bce_with_logits_loss_gradient(xp: Any, logits: Array, target: Array, scale: Any) -> Array:
    r""":math:`\nabla_1 \ell = c\,(\sigma(z) - y)`."""
    return (sigmoid(xp, logits) - target) * scale


# ---- dropout: y = m * x / (1 - p) with a random keep-mask m ------------------------------


def dropout(xp: Any, X: Array, keep: Array, p: float) -> tuple[Array, Array]:
    r"""Inverted dropout, :math:`y = x \odot m / (1 - p)`, where the boolean ``keep``
    :math:`m` keeps each element with probability :math:`1 - p`; also returns the
    factor :math:`m / (1 - p)` (of ``X``'s dtype), which is all the backward pass needs.

    Dividing by the keep probability makes :math:`E[y] = x`, so evaluation needs no
    rescaling.  ``keep`` has the shape of ``X``.
    """
    factor = xp.astype(keep, X.dtype)
    factor *= 1.0 / (1.0 - p)
    return X * factor, factor


def dropout_backward(dl_dy: Array, factor: Array) -> Array:
    r""":math:`\partial\ell/\partial x = \partial\ell/\partial y \odot m / (1 - p)`, with the
    factor of the forward pass."""
    return dl_dy * factor


# ---- the error function, for GELU -------------------------------------------------------

# The rational approximations of fdlibm's s_erf.c (Sun Microsystems, 1993), accurate to
# under one unit in the last place of float64, in the three intervals of |x| it uses.
_ERX = 8.45062911510467529297e-01  # erf(1) rounded to float precision
_ERF_SMALL_P = (
    1.28379167095512558561e-01,
    -3.25042107247001499370e-01,
    -2.84817495755985104766e-02,
    -5.77027029648944159157e-03,
    -2.37630166566501626084e-05,
)
_ERF_SMALL_Q = (
    1.0,
    3.97917223959155352819e-01,
    6.50222499887672944485e-02,
    5.08130628187576562776e-03,
    1.32494738004321644526e-04,
    -3.96022827877536812320e-06,
)
_ERF_MID_P = (
    -2.36211856075265944077e-03,
    4.14856118683748331666e-01,
    -3.72207876035701323847e-01,
    3.18346619901161753674e-01,
    -1.10894694282396677476e-01,
    3.54783043256182359371e-02,
    -2.16637559486879084300e-03,
)
_ERF_MID_Q = (
    1.0,
    1.06420880400844228286e-01,
    5.40397917702171048937e-01,
    7.18286544141962662868e-02,
    1.26171219808761642112e-01,
    1.36370839120290507362e-02,
    1.19844998467991074170e-02,
)
_ERFC_NEAR_R = (
    -9.86494403484714822705e-03,
    -6.93858572707181764372e-01,
    -1.05586262253232909814e01,
    -6.23753324503260060396e01,
    -1.62396669462573470355e02,
    -1.84605092906711035994e02,
    -8.12874355063065934246e01,
    -9.81432934416914548592e00,
)
_ERFC_NEAR_S = (
    1.0,
    1.96512716674392571292e01,
    1.37657754143519042600e02,
    4.34565877475229228821e02,
    6.45387271733267880336e02,
    4.29008140027567833386e02,
    1.08635005541779435134e02,
    6.57024977031928170135e00,
    -6.04244152148580987438e-02,
)
_ERFC_FAR_R = (
    -9.86494292470009928597e-03,
    -7.99283237680523006574e-01,
    -1.77579549177547519889e01,
    -1.60636384855821916062e02,
    -6.37566443368389627722e02,
    -1.02509513161107724954e03,
    -4.83519191608651397019e02,
)
_ERFC_FAR_S = (
    1.0,
    3.03380607434824582924e01,
    3.25792512996573918826e02,
    1.53672958608443695994e03,
    3.19985821950859553908e03,
    2.55305040643316442583e03,
    4.74528541206955367215e02,
    -2.24409524465858183362e01,
)


def _polynomial(t: Array, coefficients: tuple[float, ...]) -> Array:
    """:math:`\\sum_i c_i t^i` by Horner's rule."""
    value = t * coefficients[-1]
    for c in coefficients[-2:0:-1]:
        value = (value + c) * t
    return value + coefficients[0]


def erf_and_erfc(xp: Any, X: Array) -> tuple[Array, Array]:
    r""":math:`\mathrm{erf}(x) = \frac{2}{\sqrt\pi}\int_0^x e^{-t^2} dt` and
    :math:`\mathrm{erfc}(x) = 1 - \mathrm{erf}(x)`, each to float64 rounding (to under
    :math:`10^{-15}` relative) for every finite ``x``, from the standard's functions alone.

    fdlibm's rational approximations of :math:`a = |x|`: :math:`\mathrm{erf}(a)` for
    :math:`a < 0.84375` and around 1, and :math:`\mathrm{erfc}(a) =
    e^{-a^2 - 0.5625 + R(1/a^2)/S(1/a^2)} / a` beyond 1.25, with :math:`a^2` split so that
    its rounding error is not amplified by the exponential; the other function of the
    pair is the complement, which loses nothing there.  :math:`\mathrm{erfc}` keeps its
    relative accuracy where it is tiny (:math:`\mathrm{erfc}(26) \approx 10^{-296}`),
    which :math:`1 - \mathrm{erf}` cannot.  No exponential overflows and no division by
    zero happens: every interval's formula is evaluated on ``|x|`` clipped into it.
    Elementwise; ``erf`` is odd and :math:`\mathrm{erfc}(-a) = 2 - \mathrm{erfc}(a)`.
    """
    a = xp.abs(X)
    small = xp.clip(a, 0.0, 0.84375)
    z = small * small
    erf_small = small + small * (_polynomial(z, _ERF_SMALL_P) / _polynomial(z, _ERF_SMALL_Q))
    s = xp.clip(a, 0.84375, 1.25) - 1.0
    erf_mid = _ERX + _polynomial(s, _ERF_MID_P) / _polynomial(s, _ERF_MID_Q)
    erfc_mid = (1.0 - _ERX) - (erf_mid - _ERX)
    far = xp.clip(a, 1.25, 28.0)  # erfc(28) underflows to 0 in float64
    t = 1.0 / (far * far)
    ratio = xp.where(
        far < 1.0 / 0.35,
        _polynomial(t, _ERFC_NEAR_R) / _polynomial(t, _ERFC_NEAR_S),
        _polynomial(t, _ERFC_FAR_R) / _polynomial(t, _ERFC_FAR_S),
    )
    head = xp.round(far * 2.0**20) / 2.0**20  # 25 bits at most: head * head is exact
    erfc_far = xp.exp(-head * head - 0.5625) * xp.exp((head - far) * (head + far) + ratio) / far
    erf_a = xp.where(a < 0.84375, erf_small, xp.where(a < 1.25, erf_mid, 1.0 - erfc_far))
    erfc_a = xp.where(a < 0.84375, 1.0 - erf_small, xp.where(a < 1.25, erfc_mid, erfc_far))
    negative = X < 0
    return xp.where(negative, -erf_a, erf_a), xp.where(negative, 2.0 - erfc_a, erfc_a)


# ---- smooth activations: sigma and dl/ds = dl/dx * sigma'(s) ------------------------------

_SQRT_HALF = 0.70710678118654752440  # 1/sqrt(2)
_INV_SQRT_2PI = 0.39894228040143267794  # 1/sqrt(2 pi)
_SQRT_2_OVER_PI = 0.79788456080286535588  # sqrt(2/pi)
_GELU_CUBIC = 0.044715
# Beyond |s| = 100 the tanh of the approximate GELU is +-1 exactly, in float32 and float64.
_GELU_TANH_CLIP = 100.0
# Beyond |s| = 40 the normal density exp(-s^2/2) underflows to 0 in float64 (and float32).
_GELU_DENSITY_CLIP = 40.0


def gelu(xp: Any, S: Array) -> tuple[Array, Array]:
    r""":math:`\sigma(s) = s\,\Phi(s)`, with the normal distribution function
    :math:`\Phi(s) = \tfrac12 \mathrm{erfc}(-s/\sqrt2)`; also returns :math:`\Phi(s)`,
    kept for the backward pass.

    :math:`\mathrm{erfc}` keeps :math:`\Phi` exact in its tail (no cancellation in
    :math:`1 + \mathrm{erf}`), and saturates to exactly 0 and 1: no overflow, no NaN.
    """
    cdf = erf_and_erfc(xp, S * -_SQRT_HALF)[1] * 0.5
    return S * cdf, cdf


def gelu_backward(xp: Any, dl_dx: Array, S: Array, cdf: Array) -> Array:
    r""":math:`\partial\ell/\partial s = \partial\ell/\partial x \odot \big(\Phi(s) + s\,
    \varphi(s)\big)`, with the normal density :math:`\varphi(s) = e^{-s^2/2}/\sqrt{2\pi}`,
    evaluated at :math:`s` clipped to :math:`[-40, 40]`, beyond which it is 0 in float64:
    :math:`s^2` never overflows."""
    c = xp.clip(S, -_GELU_DENSITY_CLIP, _GELU_DENSITY_CLIP)
    return dl_dx * (cdf + S * (xp.exp(c * c * -0.5) * _INV_SQRT_2PI))


def gelu_tanh(xp: Any, S: Array) -> tuple[Array, Array]:
    r""":math:`\sigma(s) = \tfrac12 s\,(1 + \tanh u)`, :math:`u = \sqrt{2/\pi}\,(s + 0.044715
    s^3)`: torch's ``approximate="tanh"``; also returns :math:`\tanh u`, kept for the
    backward pass.  :math:`u` is computed from :math:`s` clipped to :math:`[-100, 100]`,
    where :math:`\tanh u` is already :math:`\pm 1`, so that :math:`s^3` never overflows."""
    c = xp.clip(S, -_GELU_TANH_CLIP, _GELU_TANH_CLIP)
    t = xp.tanh((c + c * c * c * _GELU_CUBIC) * _SQRT_2_OVER_PI)
    return S * (1.0 + t) * 0.5, t


def gelu_tanh_backward(xp: Any, dl_dx: Array, S: Array, t: Array) -> Array:
    r""":math:`\partial\ell/\partial s = \partial\ell/\partial x \odot \tfrac12\big(1 + \tanh u
    + s\,(1 - \tanh^2 u)\,\sqrt{2/\pi}\,(1 + 3 \cdot 0.044715\, s^2)\big)`, with :math:`s`
    clipped as in the forward pass (where :math:`1 - \tanh^2 u = 0`, so that
    :math:`0 \cdot \infty` never happens)."""
    c = xp.clip(S, -_GELU_TANH_CLIP, _GELU_TANH_CLIP)
    du_ds = (1.0 + c * c * (3.0 * _GELU_CUBIC)) * _SQRT_2_OVER_PI
    return dl_dx * ((1.0 + t + c * (1.0 - t * t) * du_ds) * 0.5)


def silu(xp: Any, S: Array) -> tuple[Array, Array]:
    r""":math:`\sigma(s) = s\,\mathrm{sigmoid}(s)`, with the overflow-free
    :func:`sigmoid`, which it also returns for the backward pass."""
    sig = sigmoid(xp, S)
    return S * sig, sig


def silu_backward(dl_dx: Array, S: Array, sig: Array) -> Array:
    r""":math:`\partial\ell/\partial s = \partial\ell/\partial x \odot
    \mathrm{sigmoid}(s)\big(1 + s\,(1 - \mathrm{sigmoid}(s))\big)`."""
    return dl_dx * (sig * (1.0 + S * (1.0 - sig)))


def elu(xp: Any, S: Array, alpha: float) -> tuple[Array, Array]:
    r""":math:`\sigma(s) = s` for :math:`s > 0`, :math:`\alpha(e^s - 1)` otherwise (with
    ``expm1``, exact near 0); also returns :math:`\sigma'(s)`, 1 or :math:`\alpha e^s`.
    The exponential sees :math:`\min(s, 0)`, so it never overflows."""
    negative_part = xp.clip(S, None, 0.0)
    e = xp.exp(negative_part)  # exactly 1 where s > 0
    positive = S > 0
    return xp.where(positive, S, xp.expm1(negative_part) * alpha), xp.where(positive, e, e * alpha)


def elu_backward(dl_dx: Array, slope: Array) -> Array:
    r""":math:`\partial\ell/\partial s = \partial\ell/\partial x \odot (1[s>0] +
    \alpha e^s\, 1[s\le0])`, from the slope of the forward pass."""
    return dl_dx * slope


def softplus(xp: Any, S: Array, beta: float, threshold: float) -> tuple[Array, Array]:
    r""":math:`\sigma(s) = \frac1\beta \log(1 + e^{\beta s})`, and :math:`s` itself where
    :math:`\beta s > \text{threshold}` (torch's cut-off); also returns :math:`\sigma'(s)
    = \mathrm{sigmoid}(\beta s)` (1 beyond the cut-off).

    Written :math:`\frac1\beta\big(\max(\beta s, 0) + \log(1 + e^{-|\beta s|})\big)`: no
    exponential exceeds 1.
    """
    z = S * beta
    smooth = (xp.clip(z, 0.0, None) + xp.log1p(xp.exp(-xp.abs(z)))) * (1.0 / beta)
    linear = z > threshold
    return xp.where(linear, S, smooth), xp.where(linear, xp.astype(linear, S.dtype), sigmoid(xp, z))


def softplus_backward(dl_dx: Array, slope: Array) -> Array:
    r""":math:`\partial\ell/\partial s = \partial\ell/\partial x \odot \mathrm{sigmoid}(\beta
    s)`, 1 beyond the cut-off, from the slope of the forward pass."""
    return dl_dx * slope


def log_softmax(xp: Any, Z: Array) -> Array:
    r""":math:`\log p_k = z_k - \operatorname{lse}(z)` per row, as :math:`u_k - \log\sum_j
    e^{u_j}` with :math:`u = z - \max_j z_j`: no exponential overflows, and the largest
    :math:`u` is exactly 0.  ``(batch, C) -> (batch, C)``."""
    u = Z - xp.max(Z, axis=1, keepdims=True)
    return u - xp.log(xp.sum(xp.exp(u), axis=1, keepdims=True))


def log_softmax_backward(xp: Any, dl_dy: Array, Y: Array) -> Array:
    r""":math:`\partial\ell/\partial z_k = \partial\ell/\partial y_k - p_k \sum_j
    \partial\ell/\partial y_j`, with :math:`p = e^{y}` from the output :math:`y = \log p`
    of the forward pass (one product and one row sum, no :math:`C \times C` Jacobian)."""
    return dl_dy - xp.exp(Y) * xp.sum(dl_dy, axis=1, keepdims=True)


# ---- layer normalization: y = (x - mean) / sqrt(var + eps) * gamma + beta ----------------


def layer_norm(xp: Any, X: Array, eps: float, axis: int = 1) -> tuple[Array, Array]:
    r""":math:`\hat x = (x - \mu)\, r`, with the mean :math:`\mu` and the biased variance
    :math:`v` over ``axis`` and :math:`r = 1/\sqrt{v + \epsilon}`; returns :math:`\hat x`
    and :math:`r` (``(batch, 1)`` for ``axis=1``, each row: layer normalization;
    ``(1, features)`` for ``axis=0``, each feature over the batch: batch normalization
    in training), which the backward pass reads.
    ``(batch, features) -> (batch, features)``."""
    centered = X - xp.mean(X, axis=axis, keepdims=True)
    r = 1.0 / xp.sqrt(xp.mean(centered * centered, axis=axis, keepdims=True) + eps)
    return centered * r, r


def layer_norm_backward(xp: Any, dl_dxhat: Array, Xhat: Array, r: Array, axis: int = 1) -> Array:
    r""":math:`\partial\ell/\partial x = r\,\big(g - \overline{g} - \hat x\,
    \overline{g \odot \hat x}\big)`, with :math:`g = \partial\ell/\partial\hat x`
    and :math:`\overline{\,\cdot\,}` the mean over ``axis`` (a row's features, or with
    ``axis=0`` a feature's batch): the backward pass through the mean and the variance
    in one expression."""
    mean_g = xp.mean(dl_dxhat, axis=axis, keepdims=True)
    mean_gx = xp.mean(dl_dxhat * Xhat, axis=axis, keepdims=True)
    return (dl_dxhat - mean_g - Xhat * mean_gx) * r


# ---- batch normalization: the training pass is layer_norm over axis 0 ------------------


def batch_statistics(xp: Any, X: Array, r: Array, eps: float) -> tuple[Array, Array]:
    r"""The batch mean :math:`\mu` ``(features,)`` and the *unbiased* batch variance
    :math:`v\,n/(n-1)` ``(features,)`` that update the running statistics, with
    :math:`v = 1/r^2 - \epsilon` the biased variance that :func:`layer_norm` (``axis=0``)
    normalized with."""
    n = X.shape[0]
    biased = 1.0 / (r[0, :] * r[0, :]) - eps
    return xp.mean(X, axis=0), biased * (n / (n - 1))


def running_average(running: Array, batch: Array, momentum: float) -> Array:
    r""":math:`(1 - m)\,\text{running} + m\,\text{batch}` (torch's ``momentum``
    :math:`m`; a cumulative average takes :math:`m = 1/t` at the :math:`t`-th batch)."""
    return running * (1.0 - momentum) + batch * momentum


def batch_norm_eval(xp: Any, X: Array, mean: Array, var: Array, eps: float) -> tuple[Array, Array]:
    r"""Evaluation mode: :math:`\hat x = (x - \mu_{\text{run}})\, r` with the running
    statistics, :math:`r = 1/\sqrt{v_{\text{run}} + \epsilon}`: an affine map of
    :math:`x`; returns :math:`\hat x` and :math:`r` ``(features,)``."""
    r = 1.0 / xp.sqrt(var + eps)
    return (X - mean) * r, r


def batch_norm_eval_backward(dl_dxhat: Array, r: Array) -> Array:
    r""":math:`\partial\ell/\partial x = r \odot \partial\ell/\partial\hat x`: the
    statistics are constants in evaluation mode."""
    return dl_dxhat * r


def affine(Xhat: Array, gamma: Array, beta: Array | None) -> Array:
    r""":math:`y = \hat x \odot \gamma + \beta`, per feature (``beta`` may be ``None``)."""
    Y = Xhat * gamma
    if beta is not None:
        Y += beta
    return Y


def affine_weight_gradient(sum: Callable[..., Array], dl_dy: Array, Xhat: Array) -> Array:
    r""":math:`\partial\mathcal{L}/\partial\gamma = \sum_n \partial\ell_n/\partial y_n
    \odot \hat x_n`, summed over the batch (the bias's is :func:`bias_gradient`).
    ``(batch, features) -> (features,)``."""
    return sum(dl_dy * Xhat, axis=0)


def affine_input_gradient(dl_dy: Array, gamma: Array) -> Array:
    r""":math:`\partial\ell/\partial\hat x = \partial\ell/\partial y \odot \gamma`."""
    return dl_dy * gamma


# ---- more losses ---------------------------------------------------------------------------


def l1_loss(
    xp: Any, pred: Array, target: Array, scale: float, *, reduce: bool = True
) -> tuple[Array, Array]:
    r""":math:`\ell = c \sum |f(x) - y|`; returns the loss and the residual kept for the
    gradient."""
    diff = pred - target
    terms = xp.abs(diff)
    return (xp.sum(terms) if reduce else terms) * scale, diff


def l1_loss_gradient(xp: Any, diff: Array, scale: Any) -> Array:
    r""":math:`\nabla_1 \ell = c\,\mathrm{sign}(f(x) - y)` (0 where they are equal, as in
    torch)."""
    return xp.sign(diff) * scale


def huber_loss(
    xp: Any, pred: Array, target: Array, delta: float, scale: float, *, reduce: bool = True
) -> tuple[Array, Array]:
    r""":math:`\ell = c \sum h_\delta(f(x) - y)`, :math:`h_\delta(d) = \tfrac12 d^2` for
    :math:`|d| < \delta` and :math:`\delta(|d| - \tfrac12\delta)` beyond; returns the loss
    and the clipped residual :math:`q = \mathrm{clip}(d, -\delta, \delta)`, kept for the
    gradient.

    Written :math:`h_\delta(d) = |q|\,(|d| - \tfrac12|q|)`, which is both branches at
    once and squares nothing larger than :math:`\delta`: no overflow, no selection.
    """
    diff = pred - target
    q = xp.clip(diff, -delta, delta)
    abs_q = xp.abs(q)
    terms = abs_q * (xp.abs(diff) - 0.5 * abs_q)
    return (xp.sum(terms) if reduce else terms) * scale, q


def huber_loss_gradient(q: Array, scale: Any) -> Array:
    r""":math:`\nabla_1 \ell = c\,\mathrm{clip}(f(x) - y, -\delta, \delta)`."""
    return q * scale


def class_targets(
    xp: Any,
    labels: Array,
    num_classes: int,
    dtype: Any,
    weight: Array | None,
    label_smoothing: float,
    ignore_index: int,
) -> tuple[Array, Array]:
    r"""The target matrix :math:`T_{n,k} = m_n\big((1-\varepsilon)\,w_{y_n}\,1[k = y_n] +
    \varepsilon\, w_k / C\big)` of a weighted, smoothed cross-entropy
    :math:`\sum_{n,k} T_{n,k}(-\log p_{n,k})`, and the divisor of ``"mean"``,
    :math:`\sum_n m_n w_{y_n}`.

    :math:`m_n = 1[y_n \ne \text{ignore\_index}]`, :math:`w` the class weights (ones when
    ``weight`` is ``None``), :math:`\varepsilon` the label smoothing.  ``(batch,) ->
    (batch, C), ()``.
    """
    kept = xp.astype(labels != ignore_index, dtype)[:, None]
    Y = one_hot(xp, labels, num_classes, dtype) * kept  # zero rows for ignored samples
    W = Y if weight is None else Y * weight[None, :]
    total = xp.sum(W)
    if label_smoothing == 0.0:
        return W, total
    spread = kept * (label_smoothing / num_classes)
    if weight is not None:
        spread = spread * weight[None, :]
    return W * (1.0 - label_smoothing) + spread, total


def soft_cross_entropy_loss(
    xp: Any, logits: Array, T: Array, scale: Any, *, reduce: bool = True
) -> tuple[Array, Array]:
    r""":math:`\ell = c \sum_{n,k} T_{n,k}\,(\operatorname{lse}(z_n) - z_{n,k})`, the
    cross-entropy against a target matrix :math:`T \ge 0` (:func:`class_targets`) whose
    rows need not sum to 1; returns the loss and the probabilities :math:`p`.

    As in :func:`cross_entropy_loss`, with :math:`u = z - m`, it is the sum of
    :math:`\big(\sum_k T_{n,k}\big)\log\sum_k e^{u_{n,k}} \ge 0` and
    :math:`-\sum_k T_{n,k} u_{n,k} \ge 0`: no overflow and no cancellation at extreme
    logits.  ``scale`` may be a 0-d array (``"mean"`` with class weights).
    """
    u = logits - xp.max(logits, axis=1, keepdims=True)
    e = xp.exp(u)
    s = xp.sum(e, axis=1, keepdims=True)
    if not reduce:  # per sample: (batch,)
        loss = xp.sum(T, axis=1) * xp.log(s[:, 0]) - xp.sum(u * T, axis=1)
        return loss * scale, e / s
    loss = xp.sum(xp.sum(T, axis=1, keepdims=True) * xp.log(s)) - xp.sum(u * T)
    return loss * scale, e / s


def soft_cross_entropy_loss_gradient(xp: Any, probs: Array, T: Array, scale: Any) -> Array:
    r""":math:`\nabla_1 \ell = c\,\big((\textstyle\sum_k T_{n,k})\,p_{n} - T_{n}\big)` per
    row: the softmax and the log-sum-exp differentiated together."""
    return (xp.sum(T, axis=1, keepdims=True) * probs - T) * scale


def nll_loss(xp: Any, log_probs: Array, T: Array, scale: Any, *, reduce: bool = True) -> Array:
    r""":math:`\ell = -c \sum_{n,k} T_{n,k} \log p_{n,k}`, on log-probabilities (the output
    of :func:`log_softmax`) and the target matrix of :func:`class_targets` (per sample,
    ``(batch,)``, with ``reduce=False``)."""
    if not reduce:
        return -xp.sum(T * log_probs, axis=1) * scale
    return -xp.sum(T * log_probs) * scale


def nll_loss_gradient(T: Array, scale: Any) -> Array:
    r""":math:`\nabla_1 \ell = -c\,T`."""
    return T * -scale
