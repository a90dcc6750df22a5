"""Every layer kind, option, alias and activation against Keras 3: output shapes and parameter
counts, trainable and non-trainable apart (Keras's summary's "Trainable params" and
"Non-trainable params": batchnorm's moving statistics are the latter).

The expected values in CASES were taken once from Keras 3.x (KERAS_BACKEND=torch) by calling,
on `keras.Input(shape, dtype)`, the layers of each case's `keras` field in turn (a
MultiHeadAttention as self-attention, `mha(x, x)`, as nnc's attention is) and reading, for
every layer, its output's shape without the batch and the sizes of its `trainable_weights` and
`non_trainable_weights`. They are recorded here literally so the unit test needs no Keras; `test_table_matches_keras` (marked `reference`)
rebuilds every case in Keras and fails if a recorded number no longer matches, and running this
file as a script prints the table afresh:

    KERAS_BACKEND=torch .venv/bin/python tests/checker/test_checker_keras_table.py
"""

from __future__ import annotations

import os
import re
from math import prod
from typing import NamedTuple

import pytest

from nnc import check_source


class K(NamedTuple):
    input: str  # nnc input declaration after `input x: `
    nnc: str  # nnc layers, separated by ";"
    keras: str  # the Keras 3 layers that produced `expected`, separated by ";" (keras.layers.*)
    expected: list  # per layer: (output shape without the batch, trainable count, non-trainable count)


CASES = [
    K('float32[28, 28, 1]', 'conv2d 32 kernel=3',
      'Conv2D(32, 3)',
      [((26, 26, 32), 320, 0)]),
    K('float32[32, 32, 1]', 'conv2d 6 kernel=5',
      'Conv2D(6, 5)',
      [((28, 28, 6), 156, 0)]),
    K('float32[5, 5, 1]', 'conv2d 2 kernel=5',
      'Conv2D(2, 5)',
      [((1, 1, 2), 52, 0)]),
    K('float32[10, 12, 3]', 'conv2d 8 kernel=3x5',
      'Conv2D(8, (3, 5))',
      [((8, 8, 8), 368, 0)]),
    K('float32[7, 9, 3]', 'conv2d 8 kernel=3x5 stride=2 padding=same',
      "Conv2D(8, (3, 5), strides=2, padding='same')",
      [((4, 5, 8), 368, 0)]),
    K('float32[8, 8, 2]', 'conv2d 4 kernel=3 stride=2',
      'Conv2D(4, 3, strides=2)',
      [((3, 3, 4), 76, 0)]),
    K('float32[7, 7, 1]', 'conv2d 4 kernel=2 stride=3 padding=same',
      "Conv2D(4, 2, strides=3, padding='same')",
      [((3, 3, 4), 20, 0)]),
    K('float32[9, 9, 2]', 'conv2d 4 kernel=3 stride=2x1',
      'Conv2D(4, 3, strides=(2, 1))',
      [((4, 7, 4), 76, 0)]),
    K('float32[11, 6, 2]', 'conv2d 3 kernel=4x2 stride=3x2 padding=same',
      "Conv2D(3, (4, 2), strides=(3, 2), padding='same')",
      [((4, 3, 3), 51, 0)]),
    K('float32[5, 5, 2]', 'conv2d 3 kernel=4 padding=same',
      "Conv2D(3, 4, padding='same')",
      [((5, 5, 3), 99, 0)]),
    K('float32[4, 4, 3]', 'conv2d 5 kernel=1 use_bias=false',
      'Conv2D(5, 1, use_bias=False)',
      [((4, 4, 5), 15, 0)]),
    K('float32[6, 6, 3]', 'conv2d 2 kernel=(3, 2) activation=relu',
      "Conv2D(2, (3, 2), activation='relu')",
      [((4, 5, 2), 38, 0)]),
    K('float32[32, 32, 1]', 'conv2d filters=6 kernel_size=5 strides=1',
      'Conv2D(filters=6, kernel_size=5, strides=1)',
      [((28, 28, 6), 156, 0)]),
    K('float32[100, 8]', 'conv1d 16 kernel=5',
      'Conv1D(16, 5)',
      [((96, 16), 656, 0)]),
    K('float32[10, 8]', 'conv1d 16 kernel=4 stride=3 padding=same',
      "Conv1D(16, 4, strides=3, padding='same')",
      [((4, 16), 528, 0)]),
    K('float32[11, 2]', 'conv1d 4 kernel=3 stride=2',
      'Conv1D(4, 3, strides=2)',
      [((5, 4), 28, 0)]),
    K('float32[6, 3]', 'conv1d 4 kernel=3 use_bias=false activation=relu',
      "Conv1D(4, 3, use_bias=False, activation='relu')",
      [((4, 4), 36, 0)]),
    K('float32[9, 3]', 'conv1d filters=4 kernel_size=2 strides=2 padding=same',
      "Conv1D(filters=4, kernel_size=2, strides=2, padding='same')",
      [((5, 4), 28, 0)]),
    K('float32[26, 26, 32]', 'maxpool2d 2',
      'MaxPooling2D(2)',
      [((13, 13, 32), 0, 0)]),
    K('float32[11, 11, 64]', 'maxpool2d 2',
      'MaxPooling2D(2)',
      [((5, 5, 64), 0, 0)]),
    K('float32[9, 9, 4]', 'maxpool2d 3 stride=2',
      'MaxPooling2D(3, strides=2)',
      [((4, 4, 4), 0, 0)]),
    K('float32[8, 9, 2]', 'maxpool2d 2x3',
      'MaxPooling2D((2, 3))',
      [((4, 3, 2), 0, 0)]),
    K('float32[5, 5, 1]', 'maxpool2d 3 stride=1 padding=same',
      "MaxPooling2D(3, strides=1, padding='same')",
      [((5, 5, 1), 0, 0)]),
    K('float32[7, 7, 1]', 'maxpool2d 2 padding=same',
      "MaxPooling2D(2, padding='same')",
      [((4, 4, 1), 0, 0)]),
    K('float32[4, 4, 1]', 'maxpool2d pool_size=2 strides=1',
      'MaxPooling2D(pool_size=2, strides=1)',
      [((3, 3, 1), 0, 0)]),
    K('float32[10, 7, 3]', 'maxpool2d 3x2 stride=1x2',
      'MaxPooling2D((3, 2), strides=(1, 2))',
      [((8, 3, 3), 0, 0)]),
    K('float32[9, 9, 3]', 'avgpool2d 2',
      'AveragePooling2D(2)',
      [((4, 4, 3), 0, 0)]),
    K('float32[7, 5, 2]', 'avgpool2d 3x2 stride=2x1 padding=same',
      "AveragePooling2D((3, 2), strides=(2, 1), padding='same')",
      [((4, 5, 2), 0, 0)]),
    K('float32[6, 6, 2]', 'avgpool2d pool_size=3 strides=2',
      'AveragePooling2D(pool_size=3, strides=2)',
      [((2, 2, 2), 0, 0)]),
    K('float32[9, 4]', 'maxpool1d 2',
      'MaxPooling1D(2)',
      [((4, 4), 0, 0)]),
    K('float32[10, 3]', 'maxpool1d 3 stride=2 padding=same',
      "MaxPooling1D(3, strides=2, padding='same')",
      [((5, 3), 0, 0)]),
    K('float32[10, 3]', 'avgpool1d 4 stride=1',
      'AveragePooling1D(4, strides=1)',
      [((7, 3), 0, 0)]),
    K('float32[7, 3]', 'avgpool1d pool_size=2',
      'AveragePooling1D(pool_size=2)',
      [((3, 3), 0, 0)]),
    K('float32[7, 3]', 'avgpool1d 3 padding=same',
      "AveragePooling1D(3, padding='same')",
      [((3, 3), 0, 0)]),
    K('float32[10, 3]', 'maxpool1d pool_size=3 strides=1',
      'MaxPooling1D(pool_size=3, strides=1)',
      [((8, 3), 0, 0)]),
    K('float32[9, 2]', 'maxpool1d pool=4 padding=same',
      "MaxPooling1D(pool_size=4, padding='same')",
      [((3, 2), 0, 0)]),
    K('float32[9, 7, 2]', 'maxpool2d pool=3x2',
      'MaxPooling2D(pool_size=(3, 2))',
      [((3, 3, 2), 0, 0)]),
    K('float32[11, 2]', 'avgpool1d pool=2 strides=3',
      'AveragePooling1D(pool_size=2, strides=3)',
      [((4, 2), 0, 0)]),
    K('float32[5, 8, 2]', 'avgpool2d pool=2 stride=1x3',
      'AveragePooling2D(pool_size=2, strides=(1, 3))',
      [((4, 3, 2), 0, 0)]),
    K('int64[6] vocab=3', 'embedding dim=5 vocab=11',
      'Embedding(11, 5)',
      [((6, 5), 55, 0)]),
    K('float32[6, 3]', 'lstm units=4',
      'LSTM(units=4)',
      [((4,), 128, 0)]),
    K('float32[5, 6, 7]', 'globalmaxpool',
      'GlobalMaxPooling2D()',
      [((7,), 0, 0)]),
    K('float32[5, 6, 7]', 'globalavgpool',
      'GlobalAveragePooling2D()',
      [((7,), 0, 0)]),
    K('float32[9, 4]', 'globalmaxpool',
      'GlobalMaxPooling1D()',
      [((4,), 0, 0)]),
    K('float32[9, 4]', 'globalavgpool',
      'GlobalAveragePooling1D()',
      [((4,), 0, 0)]),
    K('float32[3, 3, 64]', 'flatten',
      'Flatten()',
      [((576,), 0, 0)]),
    K('float32[7, 5]', 'flatten',
      'Flatten()',
      [((35,), 0, 0)]),
    K('float32[576]', 'dense 64 activation=relu',
      "Dense(64, activation='relu')",
      [((64,), 36928, 0)]),
    K('float32[64]', 'dense 10 activation=softmax use_bias=false',
      "Dense(10, activation='softmax', use_bias=False)",
      [((10,), 640, 0)]),
    K('float32[12]', 'dense units=5',
      'Dense(units=5)',
      [((5,), 65, 0)]),
    K('float32[5, 7]', 'dense 4',
      'Dense(4)',
      [((5, 4), 32, 0)]),
    K('float32[2, 3, 4]', 'dense 3',
      'Dense(3)',
      [((2, 3, 3), 15, 0)]),
    K('float32[2, 3, 4, 5]', 'dense 6 use_bias=false',
      'Dense(6, use_bias=False)',
      [((2, 3, 4, 6), 30, 0)]),
    K('float32[8, 8, 1]', 'conv2d 4 kernel=3; dense 5',
      'Conv2D(4, 3); Dense(5)',
      [((6, 6, 4), 40, 0), ((6, 6, 5), 25, 0)]),
    K('float32[10]', 'dropout 0.5',
      'Dropout(0.5)',
      [((10,), 0, 0)]),
    K('float32[4, 4, 3]', 'dropout rate=0.25',
      'Dropout(rate=0.25)',
      [((4, 4, 3), 0, 0)]),
    K('float32[10]', 'relu',
      "Activation('relu')",
      [((10,), 0, 0)]),
    K('float32[10]', 'sigmoid',
      "Activation('sigmoid')",
      [((10,), 0, 0)]),
    K('float32[3, 4]', 'tanh',
      "Activation('tanh')",
      [((3, 4), 0, 0)]),
    K('float32[10]', 'softmax',
      "Activation('softmax')",
      [((10,), 0, 0)]),
    K('int64[20] vocab=50', 'embedding 8',
      'Embedding(50, 8)',
      [((20, 8), 400, 0)]),
    K('int64[20] vocab=50', 'embedding 8 vocab=100',
      'Embedding(100, 8)',
      [((20, 8), 800, 0)]),
    K('int64[3]', 'embedding output_dim=4 input_dim=7',
      'Embedding(input_dim=7, output_dim=4)',
      [((3, 4), 28, 0)]),
    K('int64[500] vocab=10000', 'embedding 32',
      'Embedding(10000, 32)',
      [((500, 32), 320000, 0)]),
    K('int64[4, 5] vocab=9', 'embedding 2',
      'Embedding(9, 2)',
      [((4, 5, 2), 18, 0)]),
    K('float32[500, 32]', 'rnn 32',
      'SimpleRNN(32)',
      [((32,), 2080, 0)]),
    K('float32[10, 4]', 'rnn 8 return_sequences=true',
      'SimpleRNN(8, return_sequences=True)',
      [((10, 8), 104, 0)]),
    K('float32[10, 4]', 'rnn 8 activation=relu',
      "SimpleRNN(8, activation='relu')",
      [((8,), 104, 0)]),
    K('float32[6, 3]', 'rnn units=5',
      'SimpleRNN(units=5)',
      [((5,), 45, 0)]),
    K('float32[500, 32]', 'lstm 32',
      'LSTM(32)',
      [((32,), 8320, 0)]),
    K('float32[10, 4]', 'lstm 16 return_sequences=true',
      'LSTM(16, return_sequences=True)',
      [((10, 16), 1344, 0)]),
    K('float32[500, 32]', 'gru 32',
      'GRU(32)',
      [((32,), 6336, 0)]),
    K('float32[500, 32]', 'gru 32 reset_after=false',
      'GRU(32, reset_after=False)',
      [((32,), 6240, 0)]),
    K('float32[10, 4]', 'gru 8 return_sequences=true reset_after=false',
      'GRU(8, return_sequences=True, reset_after=False)',
      [((10, 8), 312, 0)]),
    K('float32[10, 4]', 'gru units=8 reset_after=true',
      'GRU(units=8, reset_after=True)',
      [((8,), 336, 0)]),
    K('float32[10, 4]', 'lstm 16 return_sequences=true; lstm 8',
      'LSTM(16, return_sequences=True); LSTM(8)',
      [((10, 16), 1344, 0), ((8,), 800, 0)]),
    K('float32[12, 3]', 'rnn 8 return_sequences=true; rnn 8 return_sequences=true; rnn 4',
      'SimpleRNN(8, return_sequences=True); SimpleRNN(8, return_sequences=True); SimpleRNN(4)',
      [((12, 8), 96, 0), ((12, 8), 136, 0), ((4,), 52, 0)]),
    K('int64[30] vocab=100', 'embedding 8; gru 8 return_sequences=true; lstm 4; dense 1 activation=sigmoid',
      "Embedding(100, 8); GRU(8, return_sequences=True); LSTM(4); Dense(1, activation='sigmoid')",
      [((30, 8), 800, 0), ((30, 8), 432, 0), ((4,), 208, 0), ((1,), 5, 0)]),
    K('int64[400] vocab=5000', 'embedding 16; conv1d 32 kernel=7 activation=relu; maxpool1d 5; conv1d 32 kernel=7 activation=relu; globalmaxpool; dense 1',
      "Embedding(5000, 16); Conv1D(32, 7, activation='relu'); MaxPooling1D(5); Conv1D(32, 7, activation='relu'); GlobalMaxPooling1D(); Dense(1)",
      [((400, 16), 80000, 0), ((394, 32), 3616, 0), ((78, 32), 0, 0), ((72, 32), 7200, 0), ((32,), 0, 0), ((1,), 33, 0)]),
    K('float32[28, 28, 1]', 'conv2d 32 kernel=3 activation=relu; maxpool2d 2; conv2d 64 kernel=3 activation=relu; maxpool2d 2; conv2d 64 kernel=3 activation=relu; flatten; dense 64 activation=relu; dense 10 activation=softmax',
      "Conv2D(32, 3, activation='relu'); MaxPooling2D(2); Conv2D(64, 3, activation='relu'); MaxPooling2D(2); Conv2D(64, 3, activation='relu'); Flatten(); Dense(64, activation='relu'); Dense(10, activation='softmax')",
      [((26, 26, 32), 320, 0), ((13, 13, 32), 0, 0), ((11, 11, 64), 18496, 0), ((5, 5, 64), 0, 0), ((3, 3, 64), 36928, 0), ((576,), 0, 0), ((64,), 36928, 0), ((10,), 650, 0)]),
    K('float32[32, 32, 3]', 'conv2d 32 kernel=3 padding=same activation=relu; conv2d 32 kernel=3 activation=relu; maxpool2d 2; dropout 0.25; conv2d 64 kernel=3 padding=same activation=relu; globalavgpool; dense 10 activation=softmax',
      "Conv2D(32, 3, padding='same', activation='relu'); Conv2D(32, 3, activation='relu'); MaxPooling2D(2); Dropout(0.25); Conv2D(64, 3, padding='same', activation='relu'); GlobalAveragePooling2D(); Dense(10, activation='softmax')",
      [((32, 32, 32), 896, 0), ((30, 30, 32), 9248, 0), ((15, 15, 32), 0, 0), ((15, 15, 32), 0, 0), ((15, 15, 64), 18496, 0), ((64,), 0, 0), ((10,), 650, 0)]),
    # batchnorm: gamma and beta train, the moving mean and variance do not
    K('float32[6, 6, 3]', 'batchnorm',
      'BatchNormalization()',
      [((6, 6, 3), 6, 6)]),
    K('float32[5, 4]', 'batchnorm momentum=0.9 epsilon=0.01 center=false',
      'BatchNormalization(momentum=0.9, epsilon=0.01, center=False)',
      [((5, 4), 4, 8)]),
    K('float32[7]', 'batchnorm scale=false',
      'BatchNormalization(scale=False)',
      [((7,), 7, 14)]),
    K('float32[4, 4, 2]', 'batchnorm center=false scale=false',
      'BatchNormalization(center=False, scale=False)',
      [((4, 4, 2), 0, 4)]),
    K('float32[8, 8, 1]', 'conv2d 4 kernel=3 use_bias=false; batchnorm; relu6',
      "Conv2D(4, 3, use_bias=False); BatchNormalization(); Activation('relu6')",
      [((6, 6, 4), 36, 0), ((6, 6, 4), 8, 8), ((6, 6, 4), 0, 0)]),
    # layernorm
    K('float32[5, 6]', 'layernorm',
      'LayerNormalization()',
      [((5, 6), 12, 0)]),
    K('float32[5, 6]', 'layernorm epsilon=1e-6 center=false',
      'LayerNormalization(epsilon=1e-6, center=False)',
      [((5, 6), 6, 0)]),
    K('float32[3, 4, 5]', 'layernorm scale=false',
      'LayerNormalization(scale=False)',
      [((3, 4, 5), 5, 0)]),
    K('float32[9]', 'layernorm center=true scale=true',
      'LayerNormalization(center=True, scale=True)',
      [((9,), 18, 0)]),
    # separable convolutions
    K('float32[8, 8, 3]', 'separable_conv2d 8 kernel=3',
      'SeparableConv2D(8, 3)',
      [((6, 6, 8), 59, 0)]),
    K('float32[9, 9, 4]', 'separable_conv2d filters=6 kernel_size=3x2 strides=2 padding=same depth_multiplier=2 activation=relu6 use_bias=false',
      "SeparableConv2D(filters=6, kernel_size=(3, 2), strides=2, padding='same', depth_multiplier=2, activation='relu6', use_bias=False)",
      [((5, 5, 6), 96, 0)]),
    K('float32[10, 10, 2]', 'separable_conv2d 4 kernel=3 dilation=2 stride=1 l1=0.01 l2=0.001',
      'SeparableConv2D(4, 3, dilation_rate=2, strides=1, depthwise_regularizer=regularizers.L1L2(l1=0.01, l2=0.001), pointwise_regularizer=regularizers.L1L2(l1=0.01, l2=0.001))',
      [((6, 6, 4), 30, 0)]),
    K('float32[10, 9, 2]', 'separable_conv2d 4 kernel=3 dilation_rate=2x3 padding=valid',
      "SeparableConv2D(4, 3, dilation_rate=(2, 3), padding='valid')",
      [((6, 3, 4), 30, 0)]),
    K('float32[11, 11, 3]', 'separable_conv2d 5 kernel=3 stride=2 dilation=2',
      'SeparableConv2D(5, 3, strides=2, dilation_rate=2)',
      [((4, 4, 5), 47, 0)]),
    K('float32[12, 3]', 'separable_conv1d 5 kernel=3',
      'SeparableConv1D(5, 3)',
      [((10, 5), 29, 0)]),
    K('float32[12, 3]', 'separable_conv1d filters=4 kernel_size=4 strides=3 padding=same depth_multiplier=3 activation=elu use_bias=false',
      "SeparableConv1D(filters=4, kernel_size=4, strides=3, padding='same', depth_multiplier=3, activation='elu', use_bias=False)",
      [((4, 4), 72, 0)]),
    K('float32[12, 2]', 'separable_conv1d 3 kernel=3 stride=1 dilation=3 l1=0.01 l2=0.01',
      'SeparableConv1D(3, 3, strides=1, dilation_rate=3, depthwise_regularizer=regularizers.L1L2(l1=0.01, l2=0.01), pointwise_regularizer=regularizers.L1L2(l1=0.01, l2=0.01))',
      [((6, 3), 15, 0)]),
    K('float32[12, 2]', 'separable_conv1d 3 kernel=2 dilation_rate=4 padding=same',
      "SeparableConv1D(3, 2, dilation_rate=4, padding='same')",
      [((12, 3), 13, 0)]),
    # depthwise convolutions: one filter per input channel (times depth_multiplier)
    K('float32[8, 8, 3]', 'depthwise_conv2d 3',
      'DepthwiseConv2D(3)',
      [((6, 6, 3), 30, 0)]),
    K('float32[9, 7, 4]', 'depthwise_conv2d kernel=3x2 strides=2 padding=same depth_multiplier=2 activation=relu6 use_bias=false',
      "DepthwiseConv2D(kernel_size=(3, 2), strides=2, padding='same', depth_multiplier=2, activation='relu6', use_bias=False)",
      [((5, 4, 8), 48, 0)]),
    K('float32[10, 10, 2]', 'depthwise_conv2d kernel_size=3 stride=1 dilation=2 l1=0.01 l2=0.01',
      'DepthwiseConv2D(kernel_size=3, strides=1, dilation_rate=2, depthwise_regularizer=regularizers.L1L2(l1=0.01, l2=0.01))',
      [((6, 6, 2), 20, 0)]),
    K('float32[10, 9, 2]', 'depthwise_conv2d 3 dilation_rate=2x3 padding=same',
      "DepthwiseConv2D(3, dilation_rate=(2, 3), padding='same')",
      [((10, 9, 2), 20, 0)]),
    K('float32[11, 11, 2]', 'depthwise_conv2d 3 stride=2 dilation=2',
      'DepthwiseConv2D(3, strides=2, dilation_rate=2)',
      [((4, 4, 2), 20, 0)]),
    K('float32[10, 3]', 'depthwise_conv1d 3',
      'DepthwiseConv1D(3)',
      [((8, 3), 12, 0)]),
    K('float32[10, 3]', 'depthwise_conv1d kernel=4 strides=3 padding=same depth_multiplier=2 activation=silu use_bias=false',
      "DepthwiseConv1D(kernel_size=4, strides=3, padding='same', depth_multiplier=2, activation='silu', use_bias=False)",
      [((4, 6), 24, 0)]),
    K('float32[10, 2]', 'depthwise_conv1d kernel_size=3 stride=1 dilation=2 l1=0.01 l2=0.01',
      'DepthwiseConv1D(kernel_size=3, strides=1, dilation_rate=2, depthwise_regularizer=regularizers.L1L2(l1=0.01, l2=0.01))',
      [((6, 2), 8, 0)]),
    K('float32[10, 2]', 'depthwise_conv1d 2 dilation_rate=3 padding=valid',
      "DepthwiseConv1D(2, dilation_rate=3, padding='valid')",
      [((7, 2), 6, 0)]),
    # transposed convolutions: kernel [k..., filters, in]
    K('float32[4, 4, 2]', 'conv2d_transpose 3 kernel=3',
      'Conv2DTranspose(3, 3)',
      [((6, 6, 3), 57, 0)]),
    K('float32[4, 4, 2]', 'conv2d_transpose 3 kernel=3 stride=2',
      'Conv2DTranspose(3, 3, strides=2)',
      [((9, 9, 3), 57, 0)]),
    K('float32[4, 5, 2]', 'conv2d_transpose filters=3 kernel_size=2 strides=3',
      'Conv2DTranspose(filters=3, kernel_size=2, strides=3)',
      [((12, 15, 3), 27, 0)]),
    K('float32[4, 5, 2]', 'conv2d_transpose 4 kernel=3x2 stride=2x1 padding=same activation=gelu use_bias=false',
      "Conv2DTranspose(4, (3, 2), strides=(2, 1), padding='same', activation='gelu', use_bias=False)",
      [((8, 5, 4), 48, 0)]),
    K('float32[3, 3, 2]', 'conv2d_transpose 2 kernel=3 padding=valid l1=0.01 l2=0.01',
      "Conv2DTranspose(2, 3, padding='valid', kernel_regularizer=regularizers.L1L2(l1=0.01, l2=0.01))",
      [((5, 5, 2), 38, 0)]),
    K('float32[5, 2]', 'conv1d_transpose 3 kernel=4',
      'Conv1DTranspose(3, 4)',
      [((8, 3), 27, 0)]),
    K('float32[5, 2]', 'conv1d_transpose filters=3 kernel_size=4 strides=3 padding=same',
      "Conv1DTranspose(filters=3, kernel_size=4, strides=3, padding='same')",
      [((15, 3), 27, 0)]),
    K('float32[5, 2]', 'conv1d_transpose 3 kernel=2 stride=3 activation=softplus use_bias=false',
      "Conv1DTranspose(3, 2, strides=3, activation='softplus', use_bias=False)",
      [((15, 3), 12, 0)]),
    K('float32[6, 2]', 'conv1d_transpose 2 kernel=3 stride=2 padding=valid l1=0.01 l2=0.01',
      "Conv1DTranspose(2, 3, strides=2, padding='valid', kernel_regularizer=regularizers.L1L2(l1=0.01, l2=0.01))",
      [((13, 2), 14, 0)]),
    # conv dilation, groups, causal padding, regularizers
    K('float32[10, 10, 2]', 'conv2d 4 kernel=3 dilation=2',
      'Conv2D(4, 3, dilation_rate=2)',
      [((6, 6, 4), 76, 0)]),
    K('float32[10, 10, 2]', 'conv2d 4 kernel=3 dilation_rate=2x3 padding=same',
      "Conv2D(4, 3, dilation_rate=(2, 3), padding='same')",
      [((10, 10, 4), 76, 0)]),
    K('float32[8, 8, 4]', 'conv2d 6 kernel=3 groups=2',
      'Conv2D(6, 3, groups=2)',
      [((6, 6, 6), 114, 0)]),
    K('float32[8, 8, 4]', 'conv2d 8 kernel=1 groups=4 use_bias=false padding=valid',
      "Conv2D(8, 1, groups=4, use_bias=False, padding='valid')",
      [((8, 8, 8), 8, 0)]),
    K('float32[6, 6, 2]', 'conv2d 3 kernel=3 activation=mish l1=0.01 l2=0.001',
      "Conv2D(3, 3, activation='mish', kernel_regularizer=regularizers.L1L2(l1=0.01, l2=0.001))",
      [((4, 4, 3), 57, 0)]),
    K('float32[10, 4]', 'conv1d 4 kernel=3 padding=causal',
      "Conv1D(4, 3, padding='causal')",
      [((10, 4), 52, 0)]),
    K('float32[10, 4]', 'conv1d 4 kernel=3 padding=causal dilation=2',
      "Conv1D(4, 3, padding='causal', dilation_rate=2)",
      [((10, 4), 52, 0)]),
    K('float32[10, 4]', 'conv1d 4 kernel=3 padding=causal stride=2',
      "Conv1D(4, 3, padding='causal', strides=2)",
      [((5, 4), 52, 0)]),
    K('float32[12, 4]', 'conv1d 6 kernel=3 groups=2 dilation_rate=3',
      'Conv1D(6, 3, groups=2, dilation_rate=3)',
      [((6, 6), 42, 0)]),
    K('float32[8, 3]', 'conv1d 2 kernel=2 padding=valid activation=softsign l1=0.1 l2=0.1',
      "Conv1D(2, 2, padding='valid', activation='softsign', kernel_regularizer=regularizers.L1L2(l1=0.1, l2=0.1))",
      [((7, 2), 14, 0)]),
    # upsampling, padding, cropping
    K('float32[5, 3]', 'upsampling1d 3',
      'UpSampling1D(3)',
      [((15, 3), 0, 0)]),
    K('float32[5, 3]', 'upsampling1d',
      'UpSampling1D()',
      [((10, 3), 0, 0)]),
    K('float32[5, 3]', 'upsampling1d size=2',
      'UpSampling1D(size=2)',
      [((10, 3), 0, 0)]),
    K('float32[3, 4, 2]', 'upsampling2d',
      'UpSampling2D()',
      [((6, 8, 2), 0, 0)]),
    K('float32[3, 4, 2]', 'upsampling2d 3 interpolation=nearest',
      "UpSampling2D(3, interpolation='nearest')",
      [((9, 12, 2), 0, 0)]),
    K('float32[3, 4, 2]', 'upsampling2d size=2x3 interpolation=bilinear',
      "UpSampling2D(size=(2, 3), interpolation='bilinear')",
      [((6, 12, 2), 0, 0)]),
    K('float32[5, 3]', 'zeropad1d',
      'ZeroPadding1D()',
      [((7, 3), 0, 0)]),
    K('float32[5, 3]', 'zeropad1d 2',
      'ZeroPadding1D(2)',
      [((9, 3), 0, 0)]),
    K('float32[5, 3]', 'zeropad1d padding=[1, 3]',
      'ZeroPadding1D(padding=(1, 3))',
      [((9, 3), 0, 0)]),
    K('float32[5, 5, 2]', 'zeropad2d',
      'ZeroPadding2D()',
      [((7, 7, 2), 0, 0)]),
    K('float32[5, 5, 2]', 'zeropad2d padding=1x2',
      'ZeroPadding2D(padding=(1, 2))',
      [((7, 9, 2), 0, 0)]),
    K('float32[5, 5, 2]', 'zeropad2d [1, 2, 3, 4]',
      'ZeroPadding2D(((1, 2), (3, 4)))',
      [((8, 12, 2), 0, 0)]),
    K('float32[6, 3]', 'cropping1d',
      'Cropping1D()',
      [((4, 3), 0, 0)]),
    K('float32[6, 3]', 'cropping1d cropping=[2, 0]',
      'Cropping1D(cropping=(2, 0))',
      [((4, 3), 0, 0)]),
    K('float32[6, 7, 2]', 'cropping2d',
      'Cropping2D()',
      [((6, 7, 2), 0, 0)]),
    K('float32[6, 7, 2]', 'cropping2d 1',
      'Cropping2D(1)',
      [((4, 5, 2), 0, 0)]),
    K('float32[6, 7, 2]', 'cropping2d cropping=1x2',
      'Cropping2D(cropping=(1, 2))',
      [((4, 3, 2), 0, 0)]),
    K('float32[6, 7, 2]', 'cropping2d [1, 0, 2, 3]',
      'Cropping2D(((1, 0), (2, 3)))',
      [((5, 2, 2), 0, 0)]),
    # reshape, permute, repeat_vector
    K('float32[12]', 'reshape [3, 4]',
      'Reshape((3, 4))',
      [((3, 4), 0, 0)]),
    K('float32[4, 6]', 'reshape [-1, 3]',
      'Reshape((-1, 3))',
      [((8, 3), 0, 0)]),
    K('float32[2, 3, 4]', 'reshape target_shape=[6, -1]',
      'Reshape(target_shape=(6, -1))',
      [((6, 4), 0, 0)]),
    K('float32[2, 3, 4]', 'reshape shape=[24]',
      'Reshape((24,))',
      [((24,), 0, 0)]),
    K('float32[4, 4, 8]', 'reshape [-1, 8]; attention heads=2 key_dim=4',
      'Reshape((-1, 8)); MultiHeadAttention(num_heads=2, key_dim=4)',
      [((16, 8), 0, 0), ((16, 8), 288, 0)]),
    K('float32[3, 4]', 'permute [2, 1]',
      'Permute((2, 1))',
      [((4, 3), 0, 0)]),
    K('float32[2, 3, 4]', 'permute dims=[3, 1, 2]',
      'Permute(dims=(3, 1, 2))',
      [((4, 2, 3), 0, 0)]),
    K('float32[2, 3, 4]', 'permute axes=[1, 3, 2]',
      'Permute((1, 3, 2))',
      [((2, 4, 3), 0, 0)]),
    K('float32[5]', 'repeat_vector 3',
      'RepeatVector(3)',
      [((3, 5), 0, 0)]),
    K('float32[4]', 'repeat_vector n=2; lstm 3 return_sequences=true',
      'RepeatVector(n=2); LSTM(3, return_sequences=True)',
      [((2, 4), 0, 0), ((2, 3), 96, 0)]),
    # spatial dropouts
    K('float32[6, 4]', 'spatial_dropout1d 0.2',
      'SpatialDropout1D(0.2)',
      [((6, 4), 0, 0)]),
    K('float32[6, 4]', 'spatial_dropout1d rate=0.5',
      'SpatialDropout1D(rate=0.5)',
      [((6, 4), 0, 0)]),
    K('float32[5, 5, 3]', 'spatial_dropout2d 0.1',
      'SpatialDropout2D(0.1)',
      [((5, 5, 3), 0, 0)]),
    K('float32[5, 5, 3]', 'spatial_dropout2d rate=0.3',
      'SpatialDropout2D(rate=0.3)',
      [((5, 5, 3), 0, 0)]),
    # self-attention: mha(x, x)
    K('float32[5, 8]', 'attention heads=2 key_dim=4',
      'MultiHeadAttention(num_heads=2, key_dim=4)',
      [((5, 8), 288, 0)]),
    K('float32[5, 8]', 'attention num_heads=2 key_dim=3 value_dim=5 use_bias=false',
      'MultiHeadAttention(num_heads=2, key_dim=3, value_dim=5, use_bias=False)',
      [((5, 8), 256, 0)]),
    K('float32[6, 4]', 'attention heads=1 key_dim=4 dropout=0.1 causal=true l1=0.01 l2=0.01',
      'SelfAttention(MultiHeadAttention(num_heads=1, key_dim=4, dropout=0.1, kernel_regularizer=regularizers.L1L2(l1=0.01, l2=0.01)), use_causal_mask=True)',
      [((6, 4), 80, 0)]),
    K('float32[6, 4]', 'attention heads=3 key_dim=2 value_dim=2 use_causal_mask=true use_bias=true',
      'SelfAttention(MultiHeadAttention(num_heads=3, key_dim=2, value_dim=2, use_bias=True), use_causal_mask=True)',
      [((6, 4), 118, 0)]),
    # position_embedding: a [max_length, features] table. Its twin is keras_hub's PositionEmbedding
    # (recorded with keras-hub 0.32.0, which outputs the table's first `steps` rows; nnc adds them
    # to its input, as keras_hub's TokenAndPositionEmbedding does). Without keras_hub installed the
    # reference test counts it by hand: max_length * features, max_length defaulting to the steps.
    K('float32[6, 5]', 'position_embedding',
      'PositionEmbedding(sequence_length=6)',
      [((6, 5), 30, 0)]),
    K('float32[6, 5]', 'position_embedding max_length=10',
      'PositionEmbedding(sequence_length=10)',
      [((6, 5), 50, 0)]),
    K('int64[7] vocab=20', 'embedding 4; position_embedding sequence_length=8',
      'Embedding(20, 4); PositionEmbedding(sequence_length=8)',
      [((7, 4), 80, 0), ((7, 4), 32, 0)]),
    # activations as layers
    K('float32[3, 4]', 'linear',
      "Activation('linear')",
      [((3, 4), 0, 0)]),
    K('float32[6]', 'selu',
      "Activation('selu')",
      [((6,), 0, 0)]),
    K('float32[6]', 'gelu',
      "Activation('gelu')",
      [((6,), 0, 0)]),
    K('float32[6]', 'gelu_tanh',
      'Activation(lambda x: activations.gelu(x, approximate=True))',
      [((6,), 0, 0)]),
    K('float32[6]', 'silu',
      "Activation('silu')",
      [((6,), 0, 0)]),
    K('float32[6]', 'swish',
      "Activation('swish')",
      [((6,), 0, 0)]),
    K('float32[6]', 'softplus',
      "Activation('softplus')",
      [((6,), 0, 0)]),
    K('float32[6]', 'softsign',
      "Activation('softsign')",
      [((6,), 0, 0)]),
    K('float32[6]', 'hard_sigmoid',
      "Activation('hard_sigmoid')",
      [((6,), 0, 0)]),
    K('float32[6]', 'relu6',
      "Activation('relu6')",
      [((6,), 0, 0)]),
    K('float32[6]', 'mish',
      "Activation('mish')",
      [((6,), 0, 0)]),
    K('float32[2, 6]', 'log_softmax',
      "Activation('log_softmax')",
      [((2, 6), 0, 0)]),
    K('float32[6]', 'leaky_relu',
      'LeakyReLU()',
      [((6,), 0, 0)]),
    K('float32[6]', 'leaky_relu negative_slope=0.1',
      'LeakyReLU(negative_slope=0.1)',
      [((6,), 0, 0)]),
    K('float32[6]', 'leaky_relu alpha=0.2',
      'LeakyReLU(negative_slope=0.2)',
      [((6,), 0, 0)]),
    K('float32[6]', 'elu',
      'ELU()',
      [((6,), 0, 0)]),
    K('float32[6]', 'elu alpha=0.5',
      'ELU(alpha=0.5)',
      [((6,), 0, 0)]),
    K('float32[3, 4]', 'prelu',
      'PReLU()',
      [((3, 4), 12, 0)]),
    K('float32[2, 3, 2]', 'prelu',
      'PReLU()',
      [((2, 3, 2), 12, 0)]),
    # activation= values on layers
    K('float32[5]', 'dense 3 activation=leaky_relu',
      "Dense(3, activation='leaky_relu')",
      [((3,), 18, 0)]),
    K('float32[5]', 'dense 3 activation=elu',
      "Dense(3, activation='elu')",
      [((3,), 18, 0)]),
    K('float32[5]', 'dense 3 activation=selu',
      "Dense(3, activation='selu')",
      [((3,), 18, 0)]),
    K('float32[5]', 'dense 3 activation=gelu_tanh',
      'Dense(3, activation=lambda x: activations.gelu(x, approximate=True))',
      [((3,), 18, 0)]),
    K('float32[5]', 'dense 3 activation=swish',
      "Dense(3, activation='swish')",
      [((3,), 18, 0)]),
    K('float32[5]', 'dense 3 activation=hard_sigmoid',
      "Dense(3, activation='hard_sigmoid')",
      [((3,), 18, 0)]),
    K('float32[5]', 'dense 3 activation=log_softmax',
      "Dense(3, activation='log_softmax')",
      [((3,), 18, 0)]),
    K('float32[5]', 'dense 3 activation=linear',
      "Dense(3, activation='linear')",
      [((3,), 18, 0)]),
    K('float32[5]', 'dense 3 activation=tanh l1=0.01 l2=0.01',
      "Dense(3, activation='tanh', kernel_regularizer=regularizers.L1L2(l1=0.01, l2=0.01))",
      [((3,), 18, 0)]),
    K('int64[4] vocab=10', 'embedding 3 l1=0.001 l2=0.001',
      'Embedding(10, 3, embeddings_regularizer=regularizers.L1L2(l1=0.001, l2=0.001))',
      [((4, 3), 30, 0)]),
    # recurrent: Bidirectional wrapper, merge modes, dropouts, direction, activations
    K('float32[6, 3]', 'lstm 4 bidirectional=true',
      'Bidirectional(LSTM(4))',
      [((8,), 256, 0)]),
    K('float32[6, 3]', 'lstm 4 bidirectional=true merge=sum return_sequences=true',
      "Bidirectional(LSTM(4, return_sequences=True), merge_mode='sum')",
      [((6, 4), 256, 0)]),
    K('float32[6, 3]', 'lstm units=4 bidirectional=true merge_mode=concat',
      "Bidirectional(LSTM(units=4), merge_mode='concat')",
      [((8,), 256, 0)]),
    K('float32[6, 3]', 'lstm 4 dropout=0.2 recurrent_dropout=0.1 go_backwards=true activation=relu recurrent_activation=hard_sigmoid l1=0.01 l2=0.01',
      "LSTM(4, dropout=0.2, recurrent_dropout=0.1, go_backwards=True, activation='relu', recurrent_activation='hard_sigmoid', kernel_regularizer=regularizers.L1L2(l1=0.01, l2=0.01))",
      [((4,), 128, 0)]),
    K('float32[6, 3]', 'gru 3 bidirectional=true merge=mul',
      "Bidirectional(GRU(3), merge_mode='mul')",
      [((3,), 144, 0)]),
    K('float32[6, 3]', 'gru 3 bidirectional=true merge_mode=ave reset_after=false return_sequences=true',
      "Bidirectional(GRU(3, reset_after=False, return_sequences=True), merge_mode='ave')",
      [((6, 3), 126, 0)]),
    K('float32[6, 3]', 'gru 3 dropout=0.1 recurrent_dropout=0.2 go_backwards=true activation=softsign recurrent_activation=sigmoid l1=0.01 l2=0.01',
      "GRU(3, dropout=0.1, recurrent_dropout=0.2, go_backwards=True, activation='softsign', recurrent_activation='sigmoid', kernel_regularizer=regularizers.L1L2(l1=0.01, l2=0.01))",
      [((3,), 72, 0)]),
    K('float32[6, 3]', 'rnn 5 bidirectional=true merge=ave',
      "Bidirectional(SimpleRNN(5), merge_mode='ave')",
      [((5,), 90, 0)]),
    K('float32[6, 3]', 'rnn 5 bidirectional=true merge_mode=mul return_sequences=true',
      "Bidirectional(SimpleRNN(5, return_sequences=True), merge_mode='mul')",
      [((6, 5), 90, 0)]),
    K('float32[6, 3]', 'rnn 2 bidirectional=false merge=concat dropout=0.3 recurrent_dropout=0.3 go_backwards=true l1=0.01 l2=0.01',
      'SimpleRNN(2, dropout=0.3, recurrent_dropout=0.3, go_backwards=True, kernel_regularizer=regularizers.L1L2(l1=0.01, l2=0.01))',
      [((2,), 12, 0)]),
    K('int64[8] vocab=30', 'embedding 4; lstm 3 bidirectional=true return_sequences=true recurrent_dropout=0.2; gru 2 bidirectional=true merge=sum; dense 1 activation=sigmoid',
      "Embedding(30, 4); Bidirectional(LSTM(3, return_sequences=True, recurrent_dropout=0.2)); Bidirectional(GRU(2), merge_mode='sum'); Dense(1, activation='sigmoid')",
      [((8, 4), 120, 0), ((8, 6), 192, 0), ((2,), 120, 0), ((1,), 3, 0)]),
]

# Keras refuses these models (a ValueError at build time: a window larger than its input, an
# input of the wrong rank, an out-of-range argument, a reshape that changes the size, a permute
# that is not a permutation, groups that do not divide the channels, stride and dilation both
# above 1 on Conv1D/2D (its Separable and Depthwise convolutions accept that, and so does nnc);
# keras_hub's PositionEmbedding shorter than the input fails when run); nnc must report an error
# for each too.
KERAS_ERRORS = [
    ('float32[4, 4, 1]', 'conv2d 8 kernel=7', 'Conv2D(8, 7)'),
    ('float32[4, 6, 1]', 'conv2d 8 kernel=5x2', 'Conv2D(8, (5, 2))'),
    ('float32[3, 2]', 'conv1d 4 kernel=5', 'Conv1D(4, 5)'),
    ('float32[4, 4, 1]', 'maxpool2d 5', 'MaxPooling2D(5)'),
    ('float32[3, 4]', 'avgpool1d 4', 'AveragePooling1D(4)'),
    ('float32[10, 8]', 'conv2d 4 kernel=3', 'Conv2D(4, 3)'),
    ('float32[5, 5, 3]', 'conv1d 4 kernel=3', 'Conv1D(4, 3)'),
    ('float32[5, 5, 3]', 'lstm 4', 'LSTM(4)'),
    ('float32[10]', 'rnn 4', 'SimpleRNN(4)'),
    ('float32[10]', 'maxpool1d 2', 'MaxPooling1D(2)'),
    ('float32[10]', 'globalavgpool', 'GlobalAveragePooling1D()'),
    ('float32[4, 4, 1]', 'conv2d 0 kernel=3', 'Conv2D(0, 3)'),
    ('float32[4]', 'dense 0', 'Dense(0)'),
    ('float32[4]', 'dropout 1.5', 'Dropout(1.5)'),
    ('float32[4, 4, 1]', 'conv2d 2 kernel=3 padding=full', "Conv2D(2, 3, padding='full')"),
    # the kinds and options of "More kinds and options"
    ('float32[12]', 'reshape [5, 2]', 'Reshape((5, 2))'),
    ('float32[12]', 'reshape [5, -1]', 'Reshape((5, -1))'),
    ('float32[4, 4, 2]', 'cropping2d 2', 'Cropping2D(2)'),
    ('float32[4, 2]', 'cropping1d [2, 2]', 'Cropping1D((2, 2))'),
    ('float32[8, 8, 4]', 'conv2d 6 kernel=3 groups=4', 'Conv2D(6, 3, groups=4)'),
    ('float32[8, 8, 4]', 'conv2d 6 kernel=3 groups=3', 'Conv2D(6, 3, groups=3)'),
    ('float32[10, 10, 4]', 'conv2d 4 kernel=3 stride=2 dilation=2', 'Conv2D(4, 3, strides=2, dilation_rate=2)'),
    ('float32[10, 4]', 'conv1d 4 kernel=3 stride=2 dilation=2', 'Conv1D(4, 3, strides=2, dilation_rate=2)'),
    ('float32[3, 4]', 'permute [1, 1]', 'Permute((1, 1))'),
    ('float32[3, 4, 5]', 'permute [2, 1]', 'Permute((2, 1))'),
    ('float32[6, 5]', 'position_embedding max_length=4', 'PositionEmbedding(sequence_length=4)'),
    ('float32[4, 4, 2]', 'conv2d 2 kernel=3 padding=causal', "Conv2D(2, 3, padding='causal')"),
    ('float32[4, 4, 2]', 'separable_conv2d 2 kernel=5', 'SeparableConv2D(2, 5)'),
    ('float32[3, 2]', 'depthwise_conv1d 4', 'DepthwiseConv1D(4)'),
    ('float32[10, 10, 2]', 'depthwise_conv2d 3 dilation=5', 'DepthwiseConv2D(3, dilation_rate=5)'),
    ('float32[5, 4]', 'repeat_vector 3', 'RepeatVector(3)'),
    ('float32[5]', 'upsampling1d 2', 'UpSampling1D(2)'),
    ('float32[5, 4]', 'lstm 4 merge=max bidirectional=true', "Bidirectional(LSTM(4), merge_mode='max')"),
    ('float32[5, 4]', 'spatial_dropout2d 0.1', 'SpatialDropout2D(0.1)'),
]


def spec(input_decl: str, layers: str) -> str:
    lines = ["model t", f"input x: {input_decl}"] + [l.strip() for l in layers.split(";")]
    return "\n".join(lines) + "\n"


def case_id(c) -> str:
    return f"{c[0]} | {c[1]}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_shapes_and_params_match_keras(case: K):
    result = check_source(spec(case.input, case.nnc))
    assert result.ok, [d.message for d in result.diagnostics]
    model = result.model
    got = [(layer.output_shape, layer.trainable_params, layer.non_trainable_params) for layer in model.layers]
    assert got == case.expected, f"nnc {got} != Keras {case.expected} for {case.keras}"
    assert [layer.params for layer in model.layers] == [t + n for _, t, n in case.expected]
    assert model.trainable_params == sum(t for _, t, _ in case.expected)
    assert model.non_trainable_params == sum(n for _, _, n in case.expected)
    assert model.total_params == model.trainable_params + model.non_trainable_params


@pytest.mark.parametrize("case", KERAS_ERRORS, ids=case_id)
def test_nnc_refuses_what_keras_refuses(case):
    decl, layers, keras_call = case
    result = check_source(spec(decl, layers))
    assert not result.ok, f"Keras refuses {keras_call} on {decl}, nnc accepted it"
    assert result.model is None


def test_table_covers_every_kind_and_option():
    """A kind, option, alias, activation or choice with no Keras-checked case is a hole in the table."""
    from nnc.lang.kinds import ACTIVATIONS, KINDS

    text = " ; ".join(c.nnc for c in CASES)
    words = set(re.findall(r"[A-Za-z_0-9]+", text))
    for name, kind in KINDS.items():
        assert name in words, f"no case for kind {name}"
        for opt in kind.options:
            for key in (opt.name,) + opt.aliases:  # every spelling, positional ones as key=value too
                assert re.search(rf"\b{name}\b[^;]*\b{key}=", text), f"no case for {name} option {key}="
            if opt.type == "choice" and opt.choices != ACTIVATIONS:  # padding=causal, merge=ave, ...
                for value in opt.choices:
                    assert re.search(rf"\b{opt.name}={value}\b", text), f"no case for {opt.name}={value}"
    for act in ACTIVATIONS:  # each as a value of activation= and as a layer of its own
        assert re.search(rf"\bactivation={act}\b", text), f"no case for activation={act}"
        assert re.search(rf"(^|; ){act}($| ;)", text), f"no case for the {act} layer"
    assert re.search(r"\brecurrent_activation=(?!sigmoid)", text), "no case for a recurrent_activation= other than the default"


def test_table_records_non_trainable_weights():
    """The table tells trainable from non-trainable: batchnorm's moving statistics are the latter."""
    assert any(n for c in CASES for _, _, n in c.expected)
    assert all(n == 0 for c in CASES for _, _, n in c.expected if "batchnorm" not in c.nnc)

# --- re-verification against Keras -----------------------------------------------------------


class SelfAttention:
    """`SelfAttention(MultiHeadAttention(...), use_causal_mask=True)` in a case's keras field: the
    layer called as mha(x, x, use_causal_mask=...). A bare MultiHeadAttention is called mha(x, x)."""

    def __init__(self, layer, use_causal_mask: bool = False):
        self.layer, self.kwargs = layer, {"use_causal_mask": use_causal_mask}


def _position_embedding(keras):
    """keras_hub's PositionEmbedding where keras_hub is installed; else a hand-made twin with its
    one weight, the [sequence_length, features] table (sequence_length defaulting to the steps),
    which fails when run on more steps than it has rows, as keras_hub's does."""
    try:
        import keras_hub
    except ImportError:
        pass
    else:
        return keras_hub.layers.PositionEmbedding

    class PositionEmbedding(keras.layers.Layer):
        def __init__(self, sequence_length=None):
            super().__init__()
            self.sequence_length = sequence_length

        def build(self, input_shape):
            self.table = self.add_weight(shape=(self.sequence_length or input_shape[1], input_shape[-1]))

        def call(self, x):
            if x.shape[1] > self.table.shape[0]:
                raise ValueError(f"{x.shape[1]} steps, {self.table.shape[0]} positions")
            return x + self.table[: x.shape[1]]

    return PositionEmbedding


def _keras_layers(keras, calls: str) -> list:
    names = dict(vars(keras.layers), regularizers=keras.regularizers, activations=keras.activations,
                 SelfAttention=SelfAttention, PositionEmbedding=_position_embedding(keras))
    return [eval(c.strip(), names) for c in calls.split(";")]  # noqa: S307 (our own table)


def _keras_input(keras, decl: str):
    m = re.match(r"(\w+)\[([^\]]*)\]", decl)
    dtype, dims = m.group(1), tuple(int(d) for d in m.group(2).split(","))
    return keras.Input(shape=dims, dtype="int32" if dtype == "int64" else "float32")


def _keras_build(keras, case):
    """The case's Keras model and, per layer, (layer, its output)."""
    x = inp = _keras_input(keras, case[0])
    made = []
    for item in _keras_layers(keras, case[2]):
        layer, kwargs = (item.layer, item.kwargs) if isinstance(item, SelfAttention) else (item, {})
        x = layer(x, x, **kwargs) if isinstance(layer, keras.layers.MultiHeadAttention) else layer(x)
        made.append((layer, x))
    return keras.Model(inp, x), made


def _size(weights) -> int:
    return sum(prod(w.shape) for w in weights)


def keras_table(keras, case) -> list:
    _, made = _keras_build(keras, case)
    return [(tuple(out.shape[1:]), _size(layer.trainable_weights), _size(layer.non_trainable_weights))
            for layer, out in made]


def _import_keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("torch")
    return pytest.importorskip("keras")


@pytest.mark.reference
def test_table_matches_keras():
    keras = _import_keras()
    wrong = [(c.keras, c.input, c.expected, got) for c in CASES if (got := keras_table(keras, c)) != c.expected]
    assert not wrong, wrong


@pytest.mark.reference
def test_keras_refuses_the_error_cases():
    """Each error case fails in Keras: when built, or when run on a batch of zeros."""
    keras = _import_keras()
    import numpy as np

    accepted = []
    for case in KERAS_ERRORS:
        try:
            model, _ = _keras_build(keras, case)
            model(np.zeros((1,) + tuple(model.inputs[0].shape[1:]), dtype=model.inputs[0].dtype))
        except (ValueError, RuntimeError):
            continue
        accepted.append(case)
    assert not accepted, accepted


if __name__ == "__main__":  # print the table afresh from Keras
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras as _keras

    for c in CASES:
        print(f"    K({c.input!r}, {c.nnc!r},\n      {c.keras!r},\n      {keras_table(_keras, c)!r}),")
