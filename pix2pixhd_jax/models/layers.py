"""Building blocks shared by the generators, discriminator and encoder (NHWC, PyTorch semantics)."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Array = jax.Array

NORMS = ("instance", "batch", "none")
UPSAMPLE_IMPLS = ("subpixel", "xla")


def torch_bias_init(fan_in: int) -> Callable:
    """PyTorch's default conv bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)); official code keeps it."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def reflect_pad(x: Array, pad: int) -> Array:
    """ReflectionPad2d(pad) on an NHWC tensor."""
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def avg_pool_3x3_s2(x: Array) -> Array:
    """AvgPool2d(3, stride=2, padding=1, count_include_pad=False): the official pyramid downsample."""
    return nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=False)


def depth_to_space(x: Array, block: int) -> Array:
    """(B, H, W, block*block*C) -> (B, H*block, W*block, C); channel index = (dy*block + dx)*C + c."""
    b, h, w, c4 = x.shape
    c = c4 // (block * block)
    x = x.reshape(b, h, w, block, block, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * block, w * block, c)


def _unfused(x: Array) -> Array:
    """Identity that XLA cannot fuse across (CPU only: elsewhere the fusion is wanted)."""
    return jax.lax.optimization_barrier(x) if jax.default_backend() == "cpu" else x


class Norm(nn.Module):
    """Instance norm (no affine, eps 1e-5, biased variance), batch norm (affine, running stats) or none."""

    kind: str = "instance"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        if self.kind == "instance":
            # The barrier keeps XLA CPU from fusing the statistics reduction into the producing
            # conv, which slows that conv down (7x7 front conv forward 0.36 s -> 0.24 s at 512x256
            # without the fusion); an identity, so numerics are unchanged.
            # Statistics are reduced in float32 by flax even for bf16 activations.
            x = _unfused(x)
            return nn.InstanceNorm(epsilon=1e-5, use_scale=False, use_bias=False, dtype=self.dtype)(x)
        if self.kind == "batch":
            # PyTorch momentum 0.1 == flax momentum 0.9 (weight of the old running value).
            return nn.BatchNorm(
                use_running_average=not train,
                momentum=0.9,
                epsilon=1e-5,
                dtype=self.dtype,
                scale_init=_batchnorm_scale_init,
            )(x)
        if self.kind == "none":
            return x
        raise ValueError(f"norm={self.kind!r} is not one of {NORMS}")


def _batchnorm_scale_init(key, shape, dtype=jnp.float32):
    """Official weights_init: BatchNorm weight ~ N(1, 0.02)."""
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class Conv(nn.Module):
    """Conv2d with PyTorch init and zero-padding semantics, optionally spectrally normalised.

    Reflect padding is applied by the caller, as the official Sequentials do with ReflectionPad2d.
    The kernel is HWIO: kernel[ky, kx, i, o] == torch_weight[o, i, ky, kx].
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    init_std: float = 0.02
    spectral_norm: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        k, in_features = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", nn.initializers.normal(self.init_std), (k, k, in_features, self.features))
        bias = self.param("bias", torch_bias_init(in_features * k * k), (self.features,))
        if self.spectral_norm:
            kernel = _spectral_normalize(self, kernel, train)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if self.stride == 2 and k % 2 == 0:
            y = _space_to_depth_conv(x, kernel, self.padding)
        elif self.stride == 1 and k % 2 == 0 and k > 2:
            y = _shift_stacked_conv(x, kernel, self.padding)
        elif self.stride == 1 and self.padding == 0:
            y = conv_valid(x, kernel)
        else:
            y = jax.lax.conv_general_dilated(
                x, kernel, (self.stride, self.stride),
                ((self.padding, self.padding), (self.padding, self.padding)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
        return y + bias.astype(self.dtype)


def _lax_conv_valid(x: Array, kernel: Array) -> Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _input_grad_by_matmul(dy: Array, kernel: Array) -> Array:
    """Input gradient of a stride-1 VALID conv as one matmul (dy . kernel^T per tap) plus col2im.

    Equal to the conv-transpose gradient up to float summation order; it skips the
    reversed-and-transposed copy of the kernel that XLA's CPU backward makes, which costs more
    than the conv itself for wide kernels on small maps (the 1024-channel residual blocks).
    """
    kh, kw, c_in, c_out = kernel.shape
    b, ho, wo, _ = dy.shape
    # Contracting the last axis of both operands is a plain A @ B^T GEMM: no kernel copy.
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
    """Stride-1 VALID NHWC/HWIO conv; its input gradient is a matmul when the kernel is wide.

    The matmul form is used when out-channels > batch * output pixels, i.e. when the kernel is
    bigger than the col2im buffer (measured on 2-core AVX2: 1024-channel 3x3 at 16x32 dx 0.17 s ->
    0.075 s; at large maps with few channels the conv-transpose form stays faster).
    """
    return _lax_conv_valid(x, kernel)


def _conv_valid_fwd(x: Array, kernel: Array):
    return _lax_conv_valid(x, kernel), (x, kernel)


def _conv_valid_bwd(res, dy: Array):
    x, kernel = res
    dx, dkernel = jax.vjp(_lax_conv_valid, x, kernel)[1](dy)
    if kernel.shape[3] > dy.shape[0] * dy.shape[1] * dy.shape[2]:
        dx = _input_grad_by_matmul(dy, kernel).astype(x.dtype)
    return dx, dkernel


conv_valid.defvjp(_conv_valid_fwd, _conv_valid_bwd)


def _shift_stacked_conv(x: Array, kernel: Array, padding: int) -> Array:
    """Stride-1 conv with an even kernel 2m as a 2x2 conv over m*m shifted copies of the input.

    Tap 2a + c reads row o + 2a + c = row o + c of the copy shifted by 2a. Exact; XLA's CPU weight
    gradient of a 4x4 kernel is ~50x slower than that of the equivalent 2x2 form.
    """
    k = kernel.shape[0]
    m = k // 2
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    hs, ws = x.shape[1] - 2 * (m - 1), x.shape[2] - 2 * (m - 1)
    z = jnp.concatenate([x[:, 2 * ay:2 * ay + hs, 2 * ax:2 * ax + ws] for ay in range(m) for ax in range(m)], axis=-1)
    c = kernel.shape[2]
    kz = kernel.reshape(m, 2, m, 2, c, -1).transpose(1, 3, 0, 2, 4, 5).reshape(2, 2, m * m * c, -1)
    return conv_valid(z, kz)


def _space_to_depth_conv(x: Array, kernel: Array, padding: int) -> Array:
    """Stride-2 conv with an even kernel 2m as a stride-1 m x m conv on the space-to-depth input.

    Tap k = 2a + b of the kernel reads padded row 2(o + a) + b, i.e. row o + a of phase b of the
    space-to-depth map, so the result equals the strided conv exactly; XLA's CPU backward of the
    stride-1 form is several times faster than that of the strided one (the D's 4x4 convs).
    """
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


class ConvTranspose(nn.Module):
    """ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1): exactly doubles H and W.

    The kernel is stored as (3, 3, in, out) with kernel[ky, kx, i, o] == torch_weight[i, o, ky, kx]
    (no spatial flip). PyTorch's output is out[y] = sum_x in[x] * w[y - 2x + 1], so the even output
    rows use tap 1 of row m and the odd ones taps 2 (row m) and 0 (row m+1). The 'subpixel' form
    computes all four output phases with one stride-1 2x2 conv (in -> 4*out channels) and a
    depth-to-space; it is much faster than XLA's zero-inserted transposed conv, whose gradients
    are slow on CPU. 'xla' uses lax.conv_transpose and serves as the reference.
    """

    features: int
    init_std: float = 0.02
    impl: str = "subpixel"
    spectral_norm: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        in_features = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.normal(self.init_std), (3, 3, in_features, self.features))
        # PyTorch computes a ConvTranspose2d's fan_in from weight.size(1) == out_channels.
        bias = self.param("bias", torch_bias_init(self.features * 9), (self.features,))
        if self.spectral_norm:
            kernel = _spectral_normalize(self, kernel, train)
        kernel = kernel.astype(self.dtype)
        x = x.astype(self.dtype)
        if self.impl == "subpixel":
            y = _subpixel_transposed_conv(x, kernel)
        elif self.impl == "xla":
            y = jax.lax.conv_transpose(
                x,
                kernel[::-1, ::-1],
                strides=(2, 2),
                padding=((1, 2), (1, 2)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
        else:
            raise ValueError(f"upsample impl {self.impl!r} is not one of {UPSAMPLE_IMPLS}")
        return y + bias.astype(self.dtype)


def _subpixel_kernel(kernel: Array) -> Array:
    """(3, 3, I, O) transposed kernel -> (2, 2, I, 4*O) stride-1 kernel for the four output phases."""
    # taps[phase][offset]: which of the 3 kernel taps reads input row (m + offset) for output 2m+phase.
    taps = {0: {0: 1}, 1: {0: 2, 1: 0}}
    i, o = kernel.shape[2], kernel.shape[3]
    zeros = jnp.zeros((i, o), kernel.dtype)
    phases = []
    for py in (0, 1):
        for px in (0, 1):
            rows = []
            for dy in (0, 1):
                cols = []
                for dx in (0, 1):
                    ky, kx = taps[py].get(dy), taps[px].get(dx)
                    cols.append(zeros if ky is None or kx is None else kernel[ky, kx])
                rows.append(jnp.stack(cols))
            phases.append(jnp.stack(rows))  # (2, 2, I, O)
    return jnp.concatenate(phases, axis=-1)  # phase-major: (2, 2, I, 4*O)


def _subpixel_transposed_conv(x: Array, kernel: Array) -> Array:
    """Transposed 3x3/s2/p1/op1 conv as pad-(0,1) + 2x2 conv + depth-to-space."""
    x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    return depth_to_space(conv_valid(x, _subpixel_kernel(kernel)), 2)


def _spectral_normalize(module: nn.Module, kernel: Array, train: bool, n_steps: int = 1, eps: float = 1e-12) -> Array:
    """Divide a (.., in, out) kernel by its largest singular value (one power iteration per call)."""
    matrix = kernel.reshape(-1, kernel.shape[-1])
    u_var = module.variable(
        "batch_stats", "spectral_u", lambda: jax.random.normal(jax.random.PRNGKey(0), (1, matrix.shape[-1]), jnp.float32)
    )
    u = u_var.value
    for _ in range(n_steps):
        v = u @ jax.lax.stop_gradient(matrix).T
        v = v / (jnp.linalg.norm(v) + eps)
        u = v @ jax.lax.stop_gradient(matrix)
        u = u / (jnp.linalg.norm(u) + eps)
    if train and not module.is_initializing():
        u_var.value = u
    sigma = (v @ matrix @ u.T)[0, 0]
    return kernel / sigma


class ResnetBlock(nn.Module):
    """x + [reflect1, conv3, norm, relu, reflect1, conv3, norm](x); no activation after the sum."""

    norm: str = "instance"
    init_std: float = 0.02
    spectral_norm: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        dim = x.shape[-1]
        conv = lambda name: Conv(dim, 3, init_std=self.init_std, spectral_norm=self.spectral_norm, dtype=self.dtype, name=name)
        y = conv("conv1")(reflect_pad(x, 1), train)
        y = nn.relu(Norm(self.norm, self.dtype, name="norm1")(y, train))
        y = conv("conv2")(reflect_pad(y, 1), train)
        y = Norm(self.norm, self.dtype, name="norm2")(y, train)
        return x + y


def count_params(tree: Any) -> int:
    """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))
