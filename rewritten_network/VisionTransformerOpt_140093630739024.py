import sys
import mindspore
from mindspore import nn
from mindspore.nn import Cell
from mindspore.ops import functional as F
#
#
sys.path.insert(0, '/work/main/.venv/lib/python3.11/site-packages/mindspore/ops/function')
from mindspore.ops.function.array_func import gather_d_

def gather_elements_opt(input, dim, index):
    gather_d__var = gather_d_(input, dim, index)
    return gather_d__var
#
sys.path.insert(0, '/work/wt17/dvt_ms/layers')
from typing import Optional
from mindspore import Tensor

def apply_selection(x, kept_idx, weights) -> Tensor:
    b, _, c = x.shape
    keep = kept_idx.shape[1]
    image_rows = x[:, 1:]
    tuple_var_7 = (b, keep, c)
    usub_var_1 = -1
    expand_dims_var = kept_idx.expand_dims(usub_var_1)
    broadcast_to_var = expand_dims_var.broadcast_to(tuple_var_7)
    kept = gather_elements_opt(image_rows, 1, broadcast_to_var)
    subscript_var_4 = x[:, :1]
    parts = [subscript_var_4, kept]
    compare_var_10 = weights is not None
    if compare_var_10:
        usub_var_2 = -1
        expand_dims_var_1 = weights.expand_dims(usub_var_2)
        mult_var_1 = image_rows * expand_dims_var_1
        sum_var_1 = mult_var_1.sum(axis=1, keepdims=True)
        parts.append(sum_var_1)
    concat_var_1 = concat_opt(parts, axis=1)
    return concat_var_1
#
sys.path.insert(0, '/work/wt17/dvt_ms/layers')

def _follow_axis2(x, kept_idx, weights) -> Tensor:
    b, h, n, m = x.shape
    mult_var = h * m
    transpose_var_1 = x.transpose(0, 2, 1, 3)
    reshape_var_1 = transpose_var_1.reshape(b, n, mult_var)
    rows = apply_selection(reshape_var_1, kept_idx, weights)
    usub_var = -1
    reshape_var = rows.reshape(b, usub_var, h, m)
    transpose_var = reshape_var.transpose(0, 2, 1, 3)
    return transpose_var
#
sys.path.insert(0, '/work/wt17/dvt_ms/layers')
from typing import Tuple

def follow_rows_and_columns(x, selections) -> Tensor:
    for kept_idx, weights in selections:
        x = _follow_axis2(x, kept_idx, weights)
        swapaxes_var = x.swapaxes(2, 3)
        _follow_axis2_var = _follow_axis2(swapaxes_var, kept_idx, weights)
        x = _follow_axis2_var.swapaxes(2, 3)
    return x
#
sys.path.insert(0, '/work/main/.venv/lib/python3.11/site-packages/mindspore/ops/auto_generate')
from mindspore.ops.auto_generate.gen_ops_prim import *
from mindspore.ops.auto_generate.pyboost_inner_prim import *
from mindspore.ops.operations.manually_defined.ops_def import *
from mindspore.ops._primitive_cache import _get_cache_prim
from mindspore.ops.auto_generate.gen_ops_def import StridedSlice

def strided_slice(input_x, begin, end, strides, begin_mask=0, end_mask=0, ellipsis_mask=0, new_axis_mask=0, shrink_axis_mask=0):
    _get_cache_prim_var_5 = _get_cache_prim(StridedSlice)
    strided_slice_op = _get_cache_prim_var_5(begin_mask, end_mask, ellipsis_mask, new_axis_mask, shrink_axis_mask)
    strided_slice_op_var = strided_slice_op(input_x, begin, end, strides)
    return strided_slice_op_var
#
sys.path.insert(0, '/work/main/.venv/lib/python3.11/site-packages/mindspore/ops/_utils')

def ms_arrange(x):
    range_var = range(x)
    out = list(range_var)
    return out
#
sys.path.insert(0, '/work/main/.venv/lib/python3.11/site-packages/mindspore/ops/function')
from mindspore.ops.function.array_func import _list_comprehensions

def _split_sub_tensors(x, split_size_or_sections, axis):
    new_indices = [0]
    enumerate_var_1 = enumerate(split_size_or_sections)
    for i, split_size in enumerate_var_1:
        subscript_var_2 = new_indices[i]
        add_var = subscript_var_2 + split_size
        new_indices.append(add_var)
    new_indices = new_indices[1:]
    sub_tensors = []
    strides = _list_comprehensions(x.ndim, 1, True)
    begin = _list_comprehensions(x.ndim, 0)
    end = _list_comprehensions(x.shape)
    len_var = len(new_indices)
    ms_arrange_var = ms_arrange(len_var)
    for i in ms_arrange_var:
        idx = new_indices[i]
        begin[axis] = 0 if i == 0 else new_indices[i - 1]
        end[axis] = idx
        tuple_var_6 = tuple(end)
        tuple_var_5 = tuple(begin)
        sliced_tensor = strided_slice(x, tuple_var_5, tuple_var_6, strides)
        sub_tensors.append(sliced_tensor)
    return sub_tensors
#
sys.path.insert(0, '/work/main/.venv/lib/python3.11/site-packages/mindspore/ops/function')
from mindspore.ops import operations as P
from mindspore.ops.function.array_func import rank_
from mindspore.ops.function.array_func import _tuple_setitem
from mindspore.ops.function.array_func import tensor_slice

def _split_int(x, split_size_or_sections, axis):
    arr_shape = x.shape
    length_along_dim = arr_shape[axis]
    compare_var_3 = length_along_dim == 0
    if compare_var_3:
        _get_cache_prim_var = _get_cache_prim(P.Split)
        function_var = _get_cache_prim_var(axis)
        res = function_var(x)
    else:
        compare_var_4 = split_size_or_sections > length_along_dim
        if compare_var_4:
            _get_cache_prim_var_1 = _get_cache_prim(P.Split)
            function_var_1 = _get_cache_prim_var_1(axis, 1)
            res = function_var_1(x)
        else:
            mod_var = length_along_dim % split_size_or_sections
            compare_var_5 = mod_var == 0
            if compare_var_5:
                sections = length_along_dim // split_size_or_sections
                _get_cache_prim_var_2 = _get_cache_prim(P.Split)
                function_var_2 = _get_cache_prim_var_2(axis, sections)
                res = function_var_2(x)
            else:
                num_sections = length_along_dim // split_size_or_sections
                length1 = num_sections * split_size_or_sections
                length2 = length_along_dim - length1
                rank__var = rank_(x)
                start1 = _list_comprehensions(rank__var, 0, True)
                size1 = _tuple_setitem(arr_shape, axis, length1)
                start2 = _tuple_setitem(start1, axis, length1)
                size2 = _tuple_setitem(arr_shape, axis, length2)
                tensor_slice_var_1 = tensor_slice(x, start2, size2)
                _get_cache_prim_var_4 = _get_cache_prim(P.Split)
                function_var_6 = _get_cache_prim_var_4(axis, 1)
                function_var_4 = function_var_6(tensor_slice_var_1)
                tensor_slice_var = tensor_slice(x, start1, size1)
                _get_cache_prim_var_3 = _get_cache_prim(P.Split)
                function_var_5 = _get_cache_prim_var_3(axis, num_sections)
                function_var_3 = function_var_5(tensor_slice_var)
                res = function_var_3 + function_var_4
    return res
#
sys.path.insert(0, '/work/main/.venv/lib/python3.11/site-packages/mindspore/ops/function')
from mindspore.common import Tensor
from mindspore.ops.function.array_func import _canonicalize_axis

def split_opt(tensor, split_size_or_sections, axis=0):
    isinstance_var_3 = isinstance(tensor, Tensor)
    not_var_1 = not isinstance_var_3
    if not_var_1:
        raise TypeError(f'expect `tensor` is a Tensor, but got {type(tensor)}')
    isinstance_var_1 = isinstance(axis, bool)
    isinstance_var_2 = isinstance(axis, int)
    not_var = not isinstance_var_2
    or_var = not_var or isinstance_var_1
    if or_var:
        raise TypeError(f'Type of Argument `axis` should be integer but got {type(axis)}')
    arr_axis = _canonicalize_axis(axis, tensor.ndim)
    isinstance_var = isinstance(split_size_or_sections, int)
    and_var_1 = isinstance_var and (not isinstance(split_size_or_sections, bool))
    if and_var_1:
        compare_var_2 = split_size_or_sections > 0
        if compare_var_2:
            res = _split_int(tensor, split_size_or_sections, arr_axis)
        else:
            raise ValueError(f"For split, the value of 'split_size_or_sections' must be more than zero, but got {split_size_or_sections}.")
    else:
        tuple_var_4 = (list, tuple)
        isinstance_var_4 = isinstance(split_size_or_sections, tuple_var_4)
        if isinstance_var_4:
            for item in split_size_or_sections:
                isinstance_var_5 = isinstance(item, bool)
                isinstance_var_6 = isinstance(item, int)
                not_var_2 = not isinstance_var_6
                or_var_1 = not_var_2 or isinstance_var_5
                if or_var_1:
                    raise TypeError(f"Each element in 'split_size_or_sections' should be integer, but got {type(item)}.")
                compare_var_7 = item < 0
                if compare_var_7:
                    raise TypeError(f"Each element in 'split_size_or_sections' should be non-negative, but got {split_size_or_sections}.")
            subscript_var_1 = tensor.shape[arr_axis]
            sum_var = sum(split_size_or_sections)
            compare_var_6 = sum_var != subscript_var_1
            if compare_var_6:
                raise ValueError(f"The sum of 'split_size_or_sections' should be equal to {tensor.shape[arr_axis]}, but got {sum(split_size_or_sections)}.")
            res = _split_sub_tensors(tensor, split_size_or_sections, arr_axis)
        else:
            raise TypeError(f'Type of Argument `split_size_or_sections` should be integer, tuple(int) or list(int), but got {type(split_size_or_sections)}')
    tuple_var_3 = tuple(res)
    return tuple_var_3
#
sys.path.insert(0, '/work/main/.venv/lib/python3.11/site-packages/mindspore/ops/auto_generate')

def cat(tensors, axis=0):
    concat_impl_var = concat_impl(tensors, axis)
    return concat_impl_var
#
sys.path.insert(0, '/work/main/.venv/lib/python3.11/site-packages/mindspore/ops/function')

def concat_opt(tensors, axis=0):
    cat_var = cat(tensors, axis)
    return cat_var
#
sys.path.insert(0, '/work/main/.venv/lib/python3.11/site-packages/mindspore/ops/auto_generate')

def broadcast_to_opt(input, shape):
    broadcast_to_impl_var = broadcast_to_impl(input, shape)
    return broadcast_to_impl_var
#
sys.path.insert(0, '/work/main/.venv/lib/python3.11/site-packages/mindspore/ops/function/grad')
from mindspore.ops.operations.other_ops import stop_gradient_op
from mindspore.ops.function.grad.grad_func import stop_gradient_op as stop_gradient_op_1

def stop_gradient_opt(value):
    stop_gradient_op_var = stop_gradient_op_1(value)
    return stop_gradient_op_var
#
sys.path.insert(0, '/work/wt17/dvt_ms/layers')
from typing import Callable, Optional
from mindspore.common import dtype as mstype

def low_precision_product(op, a, b, dtype) -> Tensor:
    compare_var_1 = dtype is None
    if compare_var_1:
        op_var_1 = op(a, b)
        return op_var_1
    cast_var_2 = cast_opt(b, dtype)
    cast_var_1 = cast_opt(a, dtype)
    op_var = op(cast_var_1, cast_var_2)
    cast_var = cast_opt(op_var, mstype.float32)
    return cast_var
#
sys.path.insert(0, '/work/main/.venv/lib/python3.11/site-packages/mindspore/ops/auto_generate')
from mindspore.ops.auto_generate.gen_ops_def import cast_op

def cast_opt(input, dtype):
    cast_op_var = cast_op(input, dtype)
    return cast_op_var
#
sys.path.insert(0, '/work/wt17/dvt_ms/kernels')
from dvt_ms.kernels.choice import UsesKernels

class UsesKernelsOpt(UsesKernels):

    def __init__(self):
        for key, value in UsesKernels.__dict__.items():
            if not key.startswith('__'):
                setattr(UsesKernelsOpt, key, value)
#
sys.path.insert(0, '/work/main/.venv/lib/python3.11/site-packages/mindspore/nn/layer')
from mindspore.nn.cell import Cell
from mindspore.nn.layer.basic import Dense

class DenseOpt(Dense, Cell):

    def __init__(self):
        Cell.__init__(self)
        for key, value in Dense.__dict__.items():
            if not key.startswith('__'):
                setattr(DenseOpt, key, value)
#
sys.path.insert(0, '/work/wt17/dvt_ms/layers')
from dvt_ms.layers.linear import Linear
from mindspore.train.amp import amp_cast

class LinearOpt_1(Linear, UsesKernelsOpt, DenseOpt):

    def __init__(self, obj):
        UsesKernelsOpt.__init__(self)
        DenseOpt.__init__(self)
        for key, value in obj.__dict__.items():
            setattr(self, key, value)

    def construct(self, x) -> Tensor:
        not_var = not self.fused
        if not_var:
            shape = x.shape
            weight = cast_opt(self.weight, x.dtype)
            low = self.product_dtype
            compare_var = low is None
            if compare_var:
                subscript_var_1 = shape[-1]
                usub_var_1 = -1
                reshape_var_1 = x.reshape(usub_var_1, subscript_var_1)
                reshape_var_1 = amp_cast(reshape_var_1, mindspore.float16)
                weight_var = amp_cast(weight, mindspore.float16)
                y = self.matmul(reshape_var_1, weight_var)
                y = amp_cast(y, mindspore.float32)
            else:
                subscript_var_2 = shape[-1]
                usub_var_2 = -1
                reshape_var_2 = x.reshape(usub_var_2, subscript_var_2)
                y = low_precision_product(self.matmul, reshape_var_2, weight, low)
            if self.has_bias:
                cast_var = cast_opt(self.bias, y.dtype)
                y = self.bias_add(y, cast_var)
            usub_var = -1
            tuple_var = (usub_var,)
            subscript_var = shape[:-1]
            add_var = subscript_var + tuple_var
            reshape_var = y.reshape(add_var)
            return reshape_var
        if self.has_bias:
            fused_linear_var = self.fused_linear(x, self.weight, self.bias)
            return fused_linear_var
        fused_project_var = self.fused_project(x, self.weight)
        return fused_project_var

    def add_to(self, x, residual) -> Tensor:
        """``residual + self(x)``; one kernel on the fused CPU kernels (no pass over the sum)."""
        if self.fused and self.has_bias:
            return self.fused_residual(x, self.weight, self.bias, residual)
        return residual + self.construct(x)
#
sys.path.insert(0, '/work/wt17/dvt_ms/layers')

class LinearOpt(Linear, UsesKernelsOpt, DenseOpt):

    def __init__(self, obj):
        UsesKernelsOpt.__init__(self)
        DenseOpt.__init__(self)
        for key, value in obj.__dict__.items():
            setattr(self, key, value)

    def construct(self, x) -> Tensor:
        not_var = not self.fused
        if not_var:
            shape = x.shape
            weight = cast_opt(self.weight, x.dtype)
            low = self.product_dtype
            compare_var = low is None
            if compare_var:
                subscript_var_1 = shape[-1]
                usub_var_1 = -1
                reshape_var_1 = x.reshape(usub_var_1, subscript_var_1)
                reshape_var_1 = amp_cast(reshape_var_1, mindspore.float16)
                weight_var = amp_cast(weight, mindspore.float16)
                y = self.matmul(reshape_var_1, weight_var)
                y = amp_cast(y, mindspore.float32)
            else:
                subscript_var_2 = shape[-1]
                usub_var_2 = -1
                reshape_var_2 = x.reshape(usub_var_2, subscript_var_2)
                y = low_precision_product(self.matmul, reshape_var_2, weight, low)
            if self.has_bias:
                cast_var_3 = cast_opt(self.bias, y.dtype)
                y = self.bias_add(y, cast_var_3)
            usub_var = -1
            tuple_var = (usub_var,)
            subscript_var = shape[:-1]
            add_var = subscript_var + tuple_var
            reshape_var = y.reshape(add_var)
            return reshape_var
        if self.has_bias:
            fused_linear_var = self.fused_linear(x, self.weight, self.bias)
            return fused_linear_var
        fused_project_var = self.fused_project(x, self.weight)
        return fused_project_var

    def add_to(self, x, residual) -> Tensor:
        """``residual + self(x)``; one kernel on the fused CPU kernels (no pass over the sum)."""
        if self.fused and self.has_bias:
            return self.fused_residual(x, self.weight, self.bias, residual)
        return residual + self.construct(x)
#
sys.path.insert(0, '/work/wt17/dvt_ms/layers')
from mindspore import Tensor, nn, ops
from dvt_ms.layers.patch_embed import PatchEmbed

class PatchEmbedOpt(PatchEmbed, nn.Cell):

    def __init__(self, obj):
        nn.Cell.__init__(self)
        for key, value in obj.__dict__.items():
            setattr(self, key, value)
        self.proj = LinearOpt(self.proj)
        self._zero_pad = obj.__class__._zero_pad

    @staticmethod
    def _zero_pad(x, pad) -> Tensor:
        """Zero padding on both spatial sides; concatenation is much faster than ``ops.pad`` on CPU."""
        b, c, h, w = x.shape
        rows = ops.zeros((b, c, pad, w), x.dtype)
        x = ops.concat((rows, x, rows), axis=2)
        cols = ops.zeros((b, c, h + 2 * pad, pad), x.dtype)
        return ops.concat((cols, x, cols), axis=3)

    def construct(self, x) -> Tensor:
        b = x.shape[0]
        p, g, pad = (self.patch_size, self.grid_size, self.padding)
        compare_var_2 = pad > 0
        if compare_var_2:
            x = self._zero_pad(x, pad)
        covered = g * p
        subscript_var_1 = x.shape[3]
        compare_var_1 = subscript_var_1 != covered
        subscript_var = x.shape[2]
        compare_var = subscript_var != covered
        or_var = compare_var or compare_var_1
        if or_var:
            x = x[:, :, :covered, :covered]
        reshape_var = x.reshape(b, self.in_chans, g, p, g, p)
        x = reshape_var.transpose(0, 2, 4, 1, 3, 5)
        mult_var_2 = self.in_chans * p
        mult_var_1 = mult_var_2 * p
        mult_var = g * g
        x = x.reshape(b, mult_var, mult_var_1)
        proj_var = self.proj(x)
        return proj_var
#
sys.path.insert(0, '/work/wt17/dvt_ms/models')
from typing import List, Optional, Tuple
from mindspore.common.initializer import TruncatedNormal, initializer
from dvt_ms.models.vision_transformer import VisionTransformer

class VisionTransformerOpt(VisionTransformer, nn.Cell):

    def __init__(self, obj):
        nn.Cell.__init__(self)
        for key, value in obj.__dict__.items():
            setattr(self, key, value)
        self.tokenizer = PatchEmbedOpt(self.tokenizer)
        self.head = LinearOpt_1(self.head)

    def _init_weights(self) -> None:
        for _, cell in self.cells_and_names():
            if isinstance(cell, nn.Dense):
                cell.weight.set_data(initializer(TruncatedNormal(0.02), cell.weight.shape))
                if cell.has_bias:
                    cell.bias.set_data(initializer('zeros', cell.bias.shape))

    def forward_features(self, x, reused_tokens=None, reused_relations=None, keep_rate=None) -> Tuple[Tensor, Optional[Tensor], List[Tensor]]:
        compare_var_1 = reused_tokens is not None
        and_var = compare_var_1 and self.detach_reused_tokens
        if and_var:
            reused_tokens = stop_gradient_opt(reused_tokens)
        tokens = self.tokenizer(x)
        subscript_var = tokens.shape[0]
        tuple_var_2 = (subscript_var, 1, self.embed_dim)
        cls = broadcast_to_opt(self.cls_token, tuple_var_2)
        tuple_var_1 = (cls, tokens)
        concat_var = concat_opt(tuple_var_1, axis=1)
        x = concat_var + self.pos_embed
        layer_biases = None
        compare_var = self.relation_reuse is not None
        if compare_var:
            relation_reuse_var = self.relation_reuse(reused_relations)
            layer_biases = split_opt(relation_reuse_var, self.num_heads, axis=1)
        relations = []
        kept = []
        selections = ()
        enumerate_var = enumerate(self.blocks)
        for i, block in enumerate_var:
            layer_bias = None
            compare_var_9 = layer_biases is not None
            if compare_var_9:
                subscript_var_3 = layer_biases[i]
                layer_bias = follow_rows_and_columns(subscript_var_3, selections)
            x, logits, kept_idx, selections = block(x, reused_tokens, layer_bias, keep_rate, selections)
            if self.gives_relations:
                relations.append(logits)
            compare_var_8 = kept_idx is not None
            if compare_var_8:
                kept.append(kept_idx)
        stacked = ops.concat(relations, axis=1) if self.gives_relations else None
        tuple_var = (x, stacked, kept)
        return tuple_var

    def head_logits(self, tokens) -> Tensor:
        subscript_var_5 = self.norm(tokens)[:, 0]
        head_var = self.head(subscript_var_5)
        return head_var

    def construct(self, x, keep_rate=None, return_indices=False):
        tokens, _, kept = self.forward_features(x, keep_rate=keep_rate)
        logits = self.head_logits(tokens)
        if return_indices:
            tuple_var_9 = tuple(kept)
            tuple_var_8 = (logits, tuple_var_9)
            return tuple_var_8
        return logits
#