//! Adam over the flat parameter vector — fast. [`crate::adam::update`]'s operations in
//! its order, compiled for the widest vectors (Rust never fuses `a·b + c` on its own, and
//! vector `sqrt` and division round as the scalar ones): the result is bit-exact.

use super::AdamShape;
use crate::fast::simd::{multiversion, Isa, Simd};

/// One Adam update of `params` from `grads` (see [`crate::adam`]).
pub fn update(params: &mut [f32], m: &mut [f32], v: &mut [f32], grads: &[f32], alpha: f32, s: &AdamShape, isa: Isa) {
    let count = s.count as usize;
    assert!(params.len() >= count && m.len() >= count && v.len() >= count && grads.len() >= count);
    update_isa(isa, &mut params[..count], &mut m[..count], &mut v[..count], &grads[..count], alpha, s);
}

multiversion!(fn update_isa = update_impl(params: &mut [f32], m: &mut [f32], v: &mut [f32], grads: &[f32], alpha: f32, s: &AdamShape));

#[inline(always)]
fn update_impl<S: Simd>(params: &mut [f32], m: &mut [f32], v: &mut [f32], grads: &[f32], alpha: f32, s: &AdamShape) {
    let (b1, b2, epsilon) = (s.one_minus_beta1, s.one_minus_beta2, s.epsilon);
    for (((p, m), v), &g) in params.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(grads) {
        *m += (g - *m) * b1;
        *v += (g * g - *v) * b2;
        *p -= (*m * alpha) / (v.sqrt() + epsilon);
    }
}
