"""Cases for the kinds, options and activations of LANGUAGE.md's "More kinds and options": one
small spec per kind and option worth telling apart, merged into onnx_cases.OPTION_SPECS so that
every test of tests/onnx that reads it (checker and shape agreement, NumPy parity, Keras parity)
covers them. Shapes are small; values are channels-first inside conv runs, so each kind is seen
in both layouts where it can be."""

from __future__ import annotations

MORE_SPECS: dict[str, str] = {
    # activations, as `activation=` (the functions' defaults: leaky_relu 0.2) on a dense...
    "dense_more_activations": (
        "input x: float32[6]\ndense 5 activation=leaky_relu\ndense 5 activation=elu\ndense 5 activation=selu\n"
        "dense 5 activation=gelu\ndense 5 activation=gelu_tanh\ndense 5 activation=silu\ndense 5 activation=swish\n"
        "dense 5 activation=softplus\ndense 5 activation=softsign\ndense 5 activation=mish\n"
        "dense 4 activation=log_softmax"),
    # ... with inputs large enough to reach the clipped parts of relu6 and hard_sigmoid
    "dense_clipped_activations": (
        "input x: float32[5]\ndense 6 activation=relu6\nrepeat_vector 2\ndense 6 activation=hard_sigmoid\n"
        "flatten\ndense 3 activation=relu6"),
    # ... and on convolutions, channels-first (log_softmax over the channels)
    "conv_more_activations": (
        "input x: float32[6, 5, 2]\nconv2d 3 kernel=2 activation=gelu\nconv2d 3 kernel=2 activation=log_softmax\n"
        "conv2d 4 kernel=1 activation=hard_sigmoid"),
    # activation layers, channels-first (after a convolution) ...
    "activation_layers_channels_first": (
        "input x: float32[6, 5, 2]\nconv2d 3 kernel=2\nleaky_relu\nelu alpha=0.5\nprelu\nselu\ngelu\ngelu_tanh\n"
        "mish\nlog_softmax\nsoftplus\nsoftsign\nsilu\nrelu6\nhard_sigmoid\nswish\nlinear"),
    # ... channels-last, in 1-D (prelu's slopes keep their own layout) ...
    "activation_layers_channels_last": (
        "input x: float32[4, 3]\nleaky_relu negative_slope=0.1\nelu\nprelu\nlinear\nlog_softmax\nmish\ngelu_tanh"),
    # ... and prelu on a 1-D channels-first value
    "prelu_conv1d": "input x: float32[7, 3]\nconv1d 4 kernel=2\nprelu\nleaky_relu alpha=0.05\nflatten",
    # dilation, groups, causal padding
    "conv1d_dilated_causal": (
        "input x: float32[12, 3]\nconv1d 4 kernel=3 dilation=2 padding=causal activation=relu\n"
        "conv1d 4 kernel=2 stride=2 padding=causal\nconv1d 2 kernel=3 dilation=2 padding=same"),
    "conv2d_dilated": (
        "input x: float32[9, 10, 2]\nconv2d 4 kernel=3 dilation=2 padding=same\nconv2d 2 kernel=2x3 dilation=2x1"),
    "conv_groups": (
        "input x: float32[8, 7, 4]\nconv2d 6 kernel=3 groups=2 padding=same\n"
        "conv2d 6 kernel=2 groups=3 use_bias=false"),
    "conv1d_groups": "input x: float32[10, 6]\nconv1d 9 kernel=3 groups=3\nconv1d 3 kernel=2 groups=3 dilation=2",
    # separable and depthwise convolutions
    "separable_conv2d": (
        "input x: float32[9, 8, 3]\n"
        "separable_conv2d 4 kernel=3 depth_multiplier=2 stride=2 padding=same activation=relu\n"
        "separable_conv2d 2 kernel=2 dilation=2 use_bias=false"),
    "separable_conv1d": (
        "input x: float32[12, 3]\nseparable_conv1d 5 kernel=3 stride=2 padding=same\n"
        "separable_conv1d 2 kernel=2 depth_multiplier=3 dilation=2 activation=tanh"),
    "depthwise_conv2d": (
        "input x: float32[8, 7, 3]\n"
        "depthwise_conv2d kernel=3 depth_multiplier=2 stride=2 padding=same activation=tanh\n"
        "depthwise_conv2d kernel=2 dilation=1x2 use_bias=false"),
    "depthwise_conv1d": (
        "input x: float32[11, 2]\ndepthwise_conv1d kernel=4 stride=2 padding=same depth_multiplier=3\n"
        "depthwise_conv1d kernel=3 dilation=2"),
    # transposed convolutions: `same` with odd and even kernels and strides, `valid` with a kernel
    # shorter than the stride (Keras's output is then longer than the full convolution)
    "conv2d_transpose": (
        "input x: float32[4, 5, 3]\nconv2d_transpose 4 kernel=3 stride=2 padding=same\n"
        "conv2d_transpose 2 kernel=4x2 stride=2x3 padding=same activation=sigmoid\n"
        "conv2d_transpose 2 kernel=2 stride=3"),
    "conv1d_transpose": (
        "input x: float32[5, 3]\nconv1d_transpose 4 kernel=4 stride=2 padding=same\n"
        "conv1d_transpose 2 kernel=3 padding=same use_bias=false\nconv1d_transpose 3 kernel=5 stride=3\n"
        "conv1d_transpose 2 kernel=1 stride=2 padding=same activation=relu"),
    "conv1d_transpose_odd_same": (
        "input x: float32[4, 2]\nconv1d_transpose 3 kernel=5 stride=2 padding=same\n"
        "conv1d_transpose 2 kernel=2 stride=3 padding=same"),
    # resizing, padding, cropping, on channels-last and channels-first values
    "upsampling1d": "input x: float32[5, 3]\nupsampling1d 3\nconv1d 2 kernel=2\nupsampling1d",
    "upsampling2d": (
        "input x: float32[4, 3, 2]\nupsampling2d 2\nconv2d 2 kernel=2\nupsampling2d 2x3 interpolation=bilinear\n"
        "upsampling2d 3x1"),
    "upsampling2d_bilinear": "input x: float32[3, 4, 2]\nupsampling2d 3x2 interpolation=bilinear",
    "zeropad_cropping2d": (
        "input x: float32[5, 6, 2]\ncropping2d 1\nzeropad2d [1, 2, 0, 3]\nconv2d 3 kernel=2\nzeropad2d 1x2\n"
        "cropping2d [1, 0, 2, 1]"),
    "zeropad_cropping1d": (
        "input x: float32[8, 3]\nzeropad1d [2, 1]\ncropping1d [1, 3]\nconv1d 2 kernel=2\ncropping1d 1\nzeropad1d 2"),
    # reshaping
    "reshape_permute_repeat": (
        "input x: float32[6, 4]\nreshape [-1, 2, 3]\npermute [3, 1, 2]\nflatten\nrepeat_vector 3\npermute [2, 1]"),
    "reshape_after_conv": "input x: float32[6, 5, 2]\nconv2d 4 kernel=2\nreshape [-1, 4]\ndense 3",
    "spatial_dropout": (
        "input x: float32[8, 3]\nspatial_dropout1d 0.5\nconv1d 2 kernel=2\nspatial_dropout1d 0.2\nreshape [7, 1, 2]\n"
        "conv2d 2 kernel=1\nspatial_dropout2d 0.3"),
    # normalization
    "batchnorm_conv": (
        "input x: float32[6, 5, 2]\nbatchnorm\nconv2d 3 kernel=2\nbatchnorm momentum=0.9\nflatten\ndense 4\n"
        "batchnorm center=false scale=false epsilon=0.01"),
    "batchnorm_sequence": (
        "input x: float32[6, 3]\nbatchnorm scale=false\ndense 4\nreshape [2, 3, 2, 2]\nbatchnorm center=false"),
    "layernorm": (
        "input x: float32[6, 4]\nlayernorm\ndense 3\nlayernorm center=false epsilon=0.01\nlayernorm scale=false\n"
        "reshape [2, 3, 3]\nlayernorm"),
    "layernorm_after_conv": "input x: float32[5, 4, 2]\nconv2d 3 kernel=2\nlayernorm\nconv2d 2 kernel=2",
    # attention and positions
    "attention": (
        "input x: float32[5, 6]\nattention heads=2 key_dim=3\n"
        "attention heads=3 key_dim=2 value_dim=4 causal=true use_bias=false dropout=0.1"),
    "position_embedding": "input x: float32[5, 4]\nposition_embedding max_length=8\nposition_embedding\ndense 2",
    "transformer_block": (
        "input t: int64[6] vocab=10\nembedding 8\nposition_embedding\nlayernorm\n"
        "attention heads=2 key_dim=4 causal=true\n"
        "layernorm\ndense 8 activation=gelu\nglobalavgpool"),
}
