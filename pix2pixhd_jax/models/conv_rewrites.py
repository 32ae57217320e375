"""Convolutions in the form each backend runs fastest: plain lax convs, or CPU-friendly rewrites.

Every rewrite here computes the same function as the plain lax convolution (equal up to float
summation order, with identical kernels and parameter shapes); they exist only because XLA's CPU
backend lowers the *gradients* of some conv shapes poorly:

  space_to_depth_conv   stride-2 even-kernel conv (the discriminator's 4x4/s2) as a stride-1 conv
                        on the space-to-depth input: the strided conv's CPU backward is several
                        times slower than the stride-1 one.
  shift_stacked_conv    stride-1 even-kernel conv (4x4/s1) as a 2x2 conv over shifted copies of the
                        input: the CPU weight gradient of a 4x4 kernel is far slower than a 2x2's.
  conv_valid            stride-1 VALID conv whose input gradient is one GEMM + col2im when the
                        kernel is wider than the output map (the 1024-channel residual blocks): the
                        CPU conv-transpose gradient first makes a flipped copy of the whole kernel.
  patch_strided_conv    the 3x3/s2 conv (the generators' and encoder's downsampling) with a backward
                        over im2col patches: the kernel gradient is one GEMM over the patches, the
                        input gradient one GEMM into per-tap values scattered like the tap-wise
                        transposed conv below (G's four down convs at 512x256, fwd+bwd: 356 -> 215 ms).
  tapwise_transposed_conv
                        the 3x3/s2 transposed conv as one GEMM into the nine per-tap outputs, shifted
                        adds into the four output phases and depth-to-space, with a two-GEMM
                        backward: the CPU gradient of XLA's zero-inserted transposed conv is
                        ~50x slower, and the 2x2-conv form below does 16/9 of the FLOPs (the four
                        upsampling layers at 512x256, fwd+bwd: 328 -> 223 ms).
  subpixel_transposed_conv
                        the 3x3/s2 transposed conv as a 2x2 conv + depth-to-space (upsample_impl
                        'subpixel', the form before 'tapwise').
  unfused               an optimization barrier before instance norm, so XLA CPU does not fuse the
                        statistics reduction into the producing conv, which slows that conv down.
  narrow_output_conv    stride-1 conv with at most 4 output channels (the generators' and encoder's
                        7x7 RGB/feature output, the discriminator's 1-channel patch logits) as one
                        GEMM into per-tap outputs plus shifted adds, and its kernel gradient as one
                        GEMM: XLA CPU's conv runs a GEMM whose N is the channel count (G's output
                        conv at 512x256, fwd+bwd: 148 -> 60 ms).
  max_pool_2x2          VGG's 2x2 max pool as a reshape + max with a first-maximum gradient: XLA CPU
                        runs reduce_window and the variadic reduce_window of its gradient on one
                        thread (~110 ms over VGG's pools in the 512x256 step).

GPU and TPU run the plain forms natively (cuDNN, the MXU), where the rewrites only add reshapes,
concatenations and copies, so the choice is per backend through one option, `conv_impl`
(config key `model.conv_impl`):

  'auto'     rewrites when jax.default_backend() is 'cpu', plain lax convs elsewhere (default)
  'rewrite'  always the rewrites
  'lax'      always lax.conv_general_dilated / lax.conv_transpose, and no barrier

The older `upsample_impl` option (`model.upsample_impl`, 'tapwise' | 'subpixel' | 'xla') still
selects the transposed conv's form, but only where rewrites are in use: the tap-wise or sub-pixel
form runs iff use_rewrites(conv_impl) and upsample_impl names it. So 'xla' forces
lax.conv_transpose under every conv_impl, and conv_impl='lax' (or 'auto' off CPU) forces it under
every upsample_impl.
The backend is read at trace time; parameter trees never depend on either option. Not to be
confused with `model.upsample_layer` (layers.upsample_2x), which picks WHICH layer upsamples
(and so the parameters); upsample_impl matters only where that layer is the transposed conv.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from pix2pixhd_jax.choices import CONV_IMPLS, UPSAMPLE_IMPLS

Array = jax.Array

_DIMS = ("NHWC", "HWIO", "NHWC")


def use_rewrites(conv_impl: str) -> bool:
    """Whether `conv_impl` selects the rewritten forms on the current default backend."""
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl={conv_impl!r} is not one of {CONV_IMPLS} (model.conv_impl)")
    if conv_impl == "auto":
        return jax.default_backend() == "cpu"
    return conv_impl == "rewrite"


def upsample_form(upsample_impl: str, conv_impl: str) -> str:
    """The transposed conv's effective form, 'tapwise', 'subpixel' or 'xla' (see the module docstring)."""
    if upsample_impl not in UPSAMPLE_IMPLS:
        raise ValueError(f"upsample impl {upsample_impl!r} is not one of {UPSAMPLE_IMPLS} (model.upsample_impl)")
    return upsample_impl if use_rewrites(conv_impl) else "xla"


def conv2d(x: Array, kernel: Array, stride: int, padding: int, conv_impl: str) -> Array:
    """Zero-padded NHWC x HWIO conv with a square kernel, in the form `conv_impl` selects."""
    k = kernel.shape[0]
    if not use_rewrites(conv_impl):
        return lax_conv(x, kernel, stride, padding)
    if stride == 1 and kernel.shape[3] <= NARROW_OUTPUT_CHANNELS:
        return narrow_output_conv(jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0))), kernel)
    if stride == 2 and k % 2 == 0:
        return space_to_depth_conv(x, kernel, padding)
    if stride == 2 and k == 3 and padding == 1 and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0:
        return patch_strided_conv(x, kernel)
    if stride == 1 and k % 2 == 0 and k > 2:
        return shift_stacked_conv(x, kernel, padding)
    if stride == 1 and padding == 0:
        return conv_valid(x, kernel)
    return lax_conv(x, kernel, stride, padding)


def conv_transpose_3x3_s2(x: Array, kernel: Array, upsample_impl: str, conv_impl: str) -> Array:
    """ConvTranspose2d(3, stride 2, padding 1, output_padding 1) with a PyTorch-layout HWIO kernel."""
    form = upsample_form(upsample_impl, conv_impl)
    if form == "tapwise":
        return tapwise_transposed_conv(x, kernel)
    if form == "subpixel":
        return subpixel_transposed_conv(x, kernel)
    return lax_conv_transpose(x, kernel)


def unfused(x: Array, conv_impl: str) -> Array:
    """Identity that XLA cannot fuse across, where rewrites are in use (elsewhere fusion is wanted)."""
    return jax.lax.optimization_barrier(x) if use_rewrites(conv_impl) else x


NARROW_OUTPUT_CHANNELS = 4


def _saving_operands(primal):
    """A custom_vjp forward rule: primal(x, kernel), keeping both operands for the backward rule."""
    return lambda x, kernel: (primal(x, kernel), (x, kernel))


def _taps_matrix(kernel: Array) -> Array:
    """(kh, kw, I, O) -> (I, kh*kw*O), columns ordered (tap row, tap column, out channel)."""
    kh, kw, c_in, c_out = kernel.shape
    return kernel.transpose(2, 0, 1, 3).reshape(c_in, kh * kw * c_out)


@jax.custom_vjp
def narrow_output_conv(x: Array, kernel: Array) -> Array:
    """Stride-1 VALID NHWC/HWIO conv for few output channels: per-tap outputs by one GEMM, then shifted adds."""
    kh, kw, c_in, c_out = kernel.shape
    b, h, w, _ = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    per_tap = jnp.matmul(x.reshape(-1, c_in), _taps_matrix(kernel), preferred_element_type=jnp.float32)
    per_tap = per_tap.reshape(b, h, w, kh, kw, c_out)
    # Output pixel o sums tap (i, j) of input pixel o + (i, j).
    out = sum(per_tap[:, i:i + ho, j:j + wo, i, j] for i in range(kh) for j in range(kw))
    return out.astype(x.dtype)


def _narrow_output_conv_bwd(res: tuple[Array, Array], dy: Array) -> tuple[Array, Array]:
    """lax's input gradient (a wide-output conv, fast as it is); the kernel gradient as one GEMM."""
    x, kernel = res
    kh, kw, c_in, c_out = kernel.shape
    b, h, w, _ = x.shape
    dx = jax.vjp(lambda a: _lax_conv_valid(a, kernel), x)[1](dy)[0]
    # Input pixel q met tap (i, j) of output pixel q - (i, j): stack those output gradients per tap.
    padded = jnp.pad(dy, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
    shifted = jnp.stack([padded[:, kh - 1 - i:kh - 1 - i + h, kw - 1 - j:kw - 1 - j + w]
                         for i in range(kh) for j in range(kw)], axis=3)
    dtaps = jnp.matmul(x.reshape(-1, c_in).T, shifted.reshape(-1, kh * kw * c_out), preferred_element_type=jnp.float32)
    dkernel = dtaps.reshape(c_in, kh, kw, c_out).transpose(1, 2, 0, 3).astype(kernel.dtype)
    return dx, dkernel


narrow_output_conv.defvjp(_saving_operands(narrow_output_conv), _narrow_output_conv_bwd)


def max_pool_2x2(x: Array, conv_impl: str) -> Array:
    """MaxPool2d(2, 2) (odd edges dropped); the gradient goes to each window's first maximum."""
    if not use_rewrites(conv_impl):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return _max_pool_2x2_reshaped(x)


def _windows_2x2(x: Array) -> Array:
    """(B, H, W, C) -> (B, H/2, 2, W/2, 2, C), dropping an odd last row/column."""
    b, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def _max_pool_2x2_reshaped(x: Array) -> Array:
    return _windows_2x2(x).max(axis=(2, 4))


def _max_pool_2x2_fwd(x: Array) -> tuple[Array, tuple[Array, Array]]:
    y = _max_pool_2x2_reshaped(x)
    return y, (x, y)


def _max_pool_2x2_bwd(res: tuple[Array, Array], dy: Array) -> tuple[Array]:
    # Ties (flat image regions give many) must not split the gradient: PyTorch's max_pool2d and
    # XLA's select-and-scatter both give all of it to the first maximum in row-major window order.
    x, y = res
    is_max = _windows_2x2(x) == y[:, :, None, :, None, :]
    taken = jnp.zeros_like(dy, dtype=bool)
    rows = []
    for i in (0, 1):
        row = []
        for j in (0, 1):
            first = is_max[:, :, i, :, j] & ~taken
            taken = taken | first
            row.append(jnp.where(first, dy, 0))
        rows.append(jnp.stack(row, axis=3))
    b, h, w, c = x.shape
    dx = jnp.stack(rows, axis=2).reshape(b, h // 2 * 2, w // 2 * 2, c)
    return (jnp.pad(dx, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


_max_pool_2x2_reshaped.defvjp(_max_pool_2x2_fwd, _max_pool_2x2_bwd)


def lax_conv(x: Array, kernel: Array, stride: int, padding: int) -> Array:
    """The plain form: lax.conv_general_dilated with symmetric zero padding."""
    pad = ((padding, padding), (padding, padding))
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), pad, dimension_numbers=_DIMS)


def lax_conv_transpose(x: Array, kernel: Array) -> Array:
    """The plain transposed conv: PyTorch's taps are lax's spatially flipped ones."""
    # Padding (1, 2) = (k - 1 - padding, k - 1 - padding + output_padding) doubles H and W exactly.
    return jax.lax.conv_transpose(x, kernel[::-1, ::-1], strides=(2, 2), padding=((1, 2), (1, 2)),
                                  dimension_numbers=_DIMS)


def _lax_conv_valid(x: Array, kernel: Array) -> Array:
    """Stride-1 VALID lax conv, the primal of conv_valid."""
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_DIMS)


def _input_grad_by_matmul(dy: Array, kernel: Array) -> Array:
    """Input gradient of a stride-1 VALID conv as one GEMM (dy . kernel^T per tap) plus col2im."""
    kh, kw, c_in, c_out = kernel.shape
    b, ho, wo, _ = dy.shape
    # Contracting the last axis of both operands is a plain A @ B^T GEMM: no flipped kernel copy.
    z = jax.lax.dot_general(dy.reshape(-1, c_out), kernel.reshape(-1, c_out), (((1,), (1,)), ((), ())))
    z = z.reshape(b, ho, wo, kh, kw, c_in)
    dx = None
    for ky in range(kh):
        for kx in range(kw):
            tap = jnp.pad(z[:, :, :, ky, kx], ((0, 0), (ky, kh - 1 - ky), (kx, kw - 1 - kx), (0, 0)))
            dx = tap if dx is None else dx + tap
    return dx


@jax.custom_vjp
def conv_valid(x: Array, kernel: Array) -> Array:
    """Stride-1 VALID NHWC/HWIO conv whose input gradient is a GEMM when the kernel is wide."""
    return _lax_conv_valid(x, kernel)


def _conv_valid_bwd(res: tuple[Array, Array], dy: Array) -> tuple[Array, Array]:
    """lax's gradients, except the input gradient by GEMM when out-channels > batch * output pixels."""
    x, kernel = res
    dx, dkernel = jax.vjp(_lax_conv_valid, x, kernel)[1](dy)
    # The GEMM wins when the kernel outweighs the col2im buffer (2-core AVX2, 1024-channel 3x3 at
    # 16x32: 0.17 s -> 0.075 s); on large maps with few channels lax's conv-transpose stays faster.
    if kernel.shape[3] > dy.shape[0] * dy.shape[1] * dy.shape[2]:
        dx = _input_grad_by_matmul(dy, kernel).astype(x.dtype)
    return dx, dkernel


conv_valid.defvjp(_saving_operands(_lax_conv_valid), _conv_valid_bwd)


def shift_stacked_conv(x: Array, kernel: Array, padding: int) -> Array:
    """Stride-1 conv with an even kernel 2m as a 2x2 conv over m*m shifted copies of the input."""
    # Tap 2a + c reads row o + 2a + c, i.e. row o + c of the copy shifted by 2a: exact.
    k, c = kernel.shape[0], kernel.shape[2]
    m = k // 2
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    hs, ws = x.shape[1] - 2 * (m - 1), x.shape[2] - 2 * (m - 1)
    z = jnp.concatenate([x[:, 2 * ay:2 * ay + hs, 2 * ax:2 * ax + ws] for ay in range(m) for ax in range(m)], axis=-1)
    kz = kernel.reshape(m, 2, m, 2, c, -1).transpose(1, 3, 0, 2, 4, 5).reshape(2, 2, m * m * c, -1)
    return conv_valid(z, kz)


def space_to_depth_conv(x: Array, kernel: Array, padding: int) -> Array:
    """Stride-2 conv with an even kernel 2m as a stride-1 m x m conv on the space-to-depth input."""
    # Tap 2a + b reads padded row 2(o + a) + b = row o + a of phase b of the space-to-depth map: exact.
    b, h, w, c = x.shape
    k = kernel.shape[0]
    m = k // 2
    out_h, out_w = (h + 2 * padding - k) // 2 + 1, (w + 2 * padding - k) // 2 + 1
    # Pad to an even size; the extra row/column only feeds outputs that are sliced off.
    hp, wp = h + 2 * padding, w + 2 * padding
    x = jnp.pad(x, ((0, 0), (padding, padding + hp % 2), (padding, padding + wp % 2), (0, 0)))
    hz, wz = (hp + hp % 2) // 2, (wp + wp % 2) // 2
    z = x.reshape(b, hz, 2, wz, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, hz, wz, 4 * c)
    kz = kernel.reshape(m, 2, m, 2, c, -1).transpose(0, 2, 1, 3, 4, 5).reshape(m, m, 4 * c, -1)
    return conv_valid(z, kz)[:, :out_h, :out_w]


def depth_to_space(x: Array, block: int) -> Array:
    """(B, H, W, block*block*C) -> (B, H*block, W*block, C); channel index = (dy*block + dx)*C + c."""
    b, h, w, c4 = x.shape
    c = c4 // (block * block)
    x = x.reshape(b, h, w, block, block, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * block, w * block, c)


def subpixel_kernel(kernel: Array) -> Array:
    """(3, 3, I, O) transposed kernel -> (2, 2, I, 4*O) stride-1 kernel for the four output phases."""
    # PyTorch: out[y] = sum_x in[x] * w[y - 2x + 1], so output row 2m reads tap 1 of input row m and
    # row 2m+1 reads taps 2 (row m) and 0 (row m+1). taps[phase][offset] = tap reading row m+offset.
    taps = {0: {0: 1}, 1: {0: 2, 1: 0}}
    zeros = jnp.zeros(kernel.shape[2:], kernel.dtype)
    tap = lambda py, px, dy, dx: (kernel[taps[py][dy], taps[px][dx]]
                                  if dy in taps[py] and dx in taps[px] else zeros)
    phases = [jnp.stack([jnp.stack([tap(py, px, dy, dx) for dx in (0, 1)]) for dy in (0, 1)])
              for py in (0, 1) for px in (0, 1)]
    return jnp.concatenate(phases, axis=-1)  # phase-major: (2, 2, I, 4*O)


def _patches_3x3_s2(x: Array) -> Array:
    """(B, 2H, 2W, C) -> (B, H, W, 9C): the zero-padded 3x3 window of each stride-2 output, tap-major."""
    b, h2, w2, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return jnp.concatenate([xp[:, ty:ty + h2:2, tx:tx + w2:2] for ty in range(3) for tx in range(3)], axis=-1)


def _phases_to_image(p00: Array, p01: Array, p10: Array, p11: Array) -> Array:
    """Four (B, H, W, C) output phases (row parity, column parity) -> the (B, 2H, 2W, C) image."""
    return depth_to_space(jnp.concatenate([p00, p01, p10, p11], axis=-1), 2)


@jax.custom_vjp
def tapwise_transposed_conv(x: Array, kernel: Array) -> Array:
    """Transposed 3x3/s2/p1/op1 conv as one GEMM into the nine per-tap outputs plus shifted adds."""
    return _transposed_conv_by_taps(x, kernel)


def _transposed_conv_by_taps(x: Array, kernel: Array) -> Array:
    """The tap-wise transposed conv's computation (also the input gradient of the 3x3/s2 conv)."""
    # PyTorch: out[y] = sum_x in[x] * w[y - 2x + 1]: row 2m takes tap 1 of input row m, row 2m+1
    # takes tap 2 of row m and tap 0 of row m+1 (columns alike). Exactly the transposed conv's FLOPs.
    b, h, w, c_in = x.shape
    taps = jnp.matmul(x.reshape(-1, c_in), _taps_matrix(kernel), preferred_element_type=jnp.float32)
    return _scatter_taps_stride2(taps.reshape(b, h, w, 3, 3, kernel.shape[3])).astype(x.dtype)


def _scatter_taps_stride2(t: Array) -> Array:
    """(B, H, W, 3, 3, C) per-tap values of pixels (m, n) -> (B, 2H, 2W, C): tap (ty, tx) lands on
    row 2m + ty - 1, column 2n + tx - 1 (taps past the top/left edge drop; the last row and column
    see no tap 2)."""
    h, w = t.shape[1], t.shape[2]
    nxt = jnp.pad(t, ((0, 0), (0, 1), (0, 1), (0, 0), (0, 0), (0, 0)))  # row/column m+1, zero past the edge
    below, right, diag = nxt[:, 1:, :w], nxt[:, :h, 1:], nxt[:, 1:, 1:]
    p00 = t[:, :, :, 1, 1]
    p01 = t[:, :, :, 1, 2] + right[:, :, :, 1, 0]
    p10 = t[:, :, :, 2, 1] + below[:, :, :, 0, 1]
    p11 = t[:, :, :, 2, 2] + right[:, :, :, 2, 0] + below[:, :, :, 0, 2] + diag[:, :, :, 0, 0]
    return _phases_to_image(p00, p01, p10, p11)


def _tapwise_transposed_conv_bwd(res: tuple[Array, Array], dy: Array) -> tuple[Array, Array]:
    """The per-tap output gradients in one stacked buffer, then one GEMM each for dx and dkernel."""
    x, kernel = res
    c_in, c_out = kernel.shape[2:]
    # Tap (ty, tx) of input pixel (m, n) landed on output pixel (2m + ty - 1, 2n + tx - 1): the
    # stride-2 3x3 patches of dy gather exactly those (the adjoint of the scatter).
    dtaps = _patches_3x3_s2(dy).reshape(-1, 9 * c_out)
    taps_matrix = _taps_matrix(kernel)
    dx = jnp.matmul(dtaps, taps_matrix.T, preferred_element_type=jnp.float32).reshape(x.shape).astype(x.dtype)
    dmatrix = jnp.matmul(x.reshape(-1, c_in).T, dtaps, preferred_element_type=jnp.float32)
    dkernel = dmatrix.reshape(c_in, 3, 3, c_out).transpose(1, 2, 0, 3).astype(kernel.dtype)
    return dx, dkernel


tapwise_transposed_conv.defvjp(_saving_operands(tapwise_transposed_conv), _tapwise_transposed_conv_bwd)


@jax.custom_vjp
def patch_strided_conv(x: Array, kernel: Array) -> Array:
    """3x3 conv, stride 2, zero padding 1, on an even-sized map, with a backward over im2col patches."""
    # The forward stays lax's: XLA CPU runs it faster than patches x kernel (15 vs 27 ms, 64->128 at 512x256).
    return lax_conv(x, kernel, 2, 1)


def _patch_strided_conv_bwd(res: tuple[Array, Array], dy: Array) -> tuple[Array, Array]:
    """Kernel gradient as one GEMM over the patches; input gradient as the tap-wise transposed conv
    of dy with the kernel's in/out channels swapped (one GEMM plus the tap scatter)."""
    x, kernel = res
    c_in, c_out = kernel.shape[2:]
    dkernel = jnp.matmul(_patches_3x3_s2(x).reshape(-1, 9 * c_in).T, dy.reshape(-1, c_out),
                         preferred_element_type=jnp.float32)
    dx = _transposed_conv_by_taps(dy, kernel.swapaxes(2, 3))
    return dx.astype(x.dtype), dkernel.reshape(kernel.shape).astype(kernel.dtype)


patch_strided_conv.defvjp(_saving_operands(patch_strided_conv), _patch_strided_conv_bwd)


def subpixel_transposed_conv(x: Array, kernel: Array) -> Array:
    """Transposed 3x3/s2/p1/op1 conv as pad-(0,1) + 2x2 conv + depth-to-space."""
    x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    return depth_to_space(conv_valid(x, subpixel_kernel(kernel)), 2)

