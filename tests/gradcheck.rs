//! Every CPU backward pass against central finite differences of its forward pass, in f64.
//! The loss is `L = Σ r·y` for random `r` (so `dL/dy = r`), except for the dense layer, whose
//! loss is its own: mean cross-entropy plus the L1 penalty.

mod common;

use common::Rng;
use wgpu_cnn::layers::{
    conv2d, dense_softmax, dropout, maxpool2d, parse_token, Backward, Ctx, HeadOutputs, LayerAt, Parsed, Pass,
    RunSettings, REGISTRY,
};

fn random(rng: &mut Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| (rng.range(-1_000_000, 1_000_000) as f64 / 1_000_000.0) * scale).collect()
}

/// Compares `analytic[i]` with (f(x + h·e_i) − f(x − h·e_i)) / 2h for every i; prints the worst.
fn check(what: &str, analytic: &[f64], at: &[f64], f: impl Fn(&[f64]) -> f64) {
    let h = 1e-6;
    let mut worst = (0.0, 0usize);
    let mut point = at.to_vec();
    for i in 0..at.len() {
        point[i] = at[i] + h;
        let up = f(&point);
        point[i] = at[i] - h;
        let down = f(&point);
        point[i] = at[i];
        let numeric = (up - down) / (2.0 * h);
        let error = (analytic[i] - numeric).abs() / (1.0 + numeric.abs());
        if error > worst.0 {
            worst = (error, i);
        }
        assert!(error < 1e-6, "{what}[{i}]: analytic {} vs numeric {numeric} (relative error {error:e})", analytic[i]);
    }
    eprintln!("{what}: {} elements, worst relative error {:e} at {}", at.len(), worst.0, worst.1);
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn check_conv(batch: usize, input: [usize; 3], filters: usize, stride: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let s = conv2d::Conv2dShape::new(batch, input, filters, stride);
    let x = random(&mut rng, s.input_len(), 1.0);
    let kernel = random(&mut rng, s.kernel_len(), 0.5);
    let bias = random(&mut rng, filters, 0.1);
    let r = random(&mut rng, s.output_len(), 1.0);
    let loss = |x: &[f64], kernel: &[f64], bias: &[f64]| {
        let mut y = vec![0.0; s.output_len()];
        conv2d::forward(&mut y, x, kernel, bias, &s);
        dot(&y, &r)
    };
    let mut y = vec![0.0; s.output_len()];
    conv2d::forward(&mut y, &x, &kernel, &bias, &s);
    assert!(y.contains(&0.0) && y.iter().any(|&v| v > 0.0), "the test should cross the ReLU's kink");
    let (mut dx, mut dkernel, mut dbias) =
        (vec![f64::NAN; x.len()], vec![f64::NAN; kernel.len()], vec![f64::NAN; filters]);
    conv2d::backward_input(&mut dx, &r, &y, &kernel, &s);
    conv2d::backward_weight(&mut dkernel, &mut dbias, &r, &y, &x, &s);
    let name = format!("conv2d {input:?}→{filters} stride {stride}");
    check(&format!("{name} dx"), &dx, &x, |x| loss(x, &kernel, &bias));
    check(&format!("{name} dkernel"), &dkernel, &kernel, |k| loss(&x, k, &bias));
    check(&format!("{name} dbias"), &dbias, &bias, |b| loss(&x, &kernel, b));
}

#[test]
fn conv2d_gradients_match_finite_differences_at_stride_1() {
    check_conv(2, [5, 4, 3], 4, 1, 1);
    check_conv(1, [1, 1, 2], 3, 1, 2);
}

#[test]
fn conv2d_gradients_match_finite_differences_at_stride_2_on_even_and_odd_inputs() {
    check_conv(2, [6, 4, 2], 3, 2, 3); // even: pad 0 top/left, 1 bottom/right
    check_conv(2, [5, 7, 2], 3, 2, 4); // odd: pad 1 on each side
}

#[test]
fn maxpool_gradient_matches_finite_differences_including_odd_edges() {
    let mut rng = Rng::new(5);
    let s = maxpool2d::PoolShape::new(2, [5, 4, 3]);
    let x = random(&mut rng, s.input_len(), 1.0);
    let r = random(&mut rng, s.output_len(), 1.0);
    let loss = |x: &[f64]| {
        let mut y = vec![0.0; s.output_len()];
        maxpool2d::forward(&mut y, x, &s);
        dot(&y, &r)
    };
    let mut dx = vec![f64::NAN; x.len()];
    maxpool2d::backward_input(&mut dx, &r, &x, &s);
    check("maxpool2d dx", &dx, &x, loss);
    // Row 4 of a 5-row input belongs to no window.
    assert!((0..4 * 3).all(|i| dx[(4 * 4 * 3) + i] == 0.0));
}

#[test]
fn maxpool_sends_the_gradient_of_a_tie_to_the_first_maximum() {
    let s = maxpool2d::PoolShape::new(1, [2, 2, 1]);
    let x = [3.0f64, 3.0, 1.0, 3.0];
    let mut dx = [f64::NAN; 4];
    maxpool2d::backward_input(&mut dx, &[7.0], &x, &s);
    assert_eq!(dx, [7.0, 0.0, 0.0, 0.0]);
}

#[test]
fn dropout_gradient_matches_finite_differences_and_keeps_about_one_minus_rate() {
    let mut rng = Rng::new(6);
    let s = dropout::DropoutShape::new(3, 50, 4, 0.5, 42);
    let training = Pass::Training { step: 7, first: 0 };
    let x = random(&mut rng, s.len(), 1.0);
    let r = random(&mut rng, s.len(), 1.0);
    let loss = |x: &[f64]| {
        let mut y = vec![0.0; s.len()];
        dropout::forward(&mut y, x, training, &s);
        dot(&y, &r)
    };
    let mut dx = vec![f64::NAN; x.len()];
    dropout::backward_input(&mut dx, &r, training, &s);
    check("dropout dx", &dx, &x, loss);
    let mut y = vec![0.0; s.len()];
    dropout::forward(&mut y, &x, training, &s);
    let kept = y.iter().filter(|&&v| v != 0.0).count();
    assert!((55..95).contains(&kept), "kept {kept} of 150 at rate 0.5");
    assert!(y.iter().zip(&x).all(|(y, x)| *y == 0.0 || (*y - 2.0 * x).abs() < 1e-12), "kept units are scaled by 2");
    dropout::forward(&mut y, &x, Pass::Inference, &s);
    assert_eq!(y, x, "dropout is the identity at inference");
}

#[test]
fn dense_softmax_gradients_match_finite_differences_of_mean_cross_entropy_plus_l1() {
    let mut rng = Rng::new(8);
    let (batch, features, classes) = (3, 7, 5);
    let s = dense_softmax::DenseShape::new(batch, features, classes, 0.01);
    let x = random(&mut rng, batch * features, 1.0);
    let kernel = random(&mut rng, features * classes, 0.5);
    let bias = random(&mut rng, classes, 0.1);
    let labels = [0u32, 4, 2];
    let loss = |x: &[f64], kernel: &[f64], bias: &[f64]| {
        let (mut probs, mut dlogits, mut losses, mut predicted) =
            (vec![0.0; batch * classes], vec![0.0; batch * classes], vec![0.0; batch], vec![0u32; batch]);
        dense_softmax::forward(&mut probs, &mut dlogits, &mut losses, &mut predicted, x, kernel, bias, &labels, &s);
        losses.iter().sum::<f64>() / batch as f64 + dense_softmax::l1_penalty(kernel, &s)
    };
    let (mut probs, mut dlogits, mut losses, mut predicted) =
        (vec![0.0; batch * classes], vec![0.0; batch * classes], vec![0.0; batch], vec![0u32; batch]);
    dense_softmax::forward(&mut probs, &mut dlogits, &mut losses, &mut predicted, &x, &kernel, &bias, &labels, &s);
    for n in 0..batch {
        let row = &probs[n * classes..][..classes];
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12, "softmax rows sum to 1");
        assert!((losses[n] + row[labels[n] as usize].ln()).abs() < 1e-12, "loss = −log p[label]");
    }
    let (mut dx, mut dkernel, mut dbias) =
        (vec![f64::NAN; x.len()], vec![f64::NAN; kernel.len()], vec![f64::NAN; classes]);
    dense_softmax::backward_input(&mut dx, &dlogits, &kernel, &s);
    dense_softmax::backward_weight(&mut dkernel, &mut dbias, &dlogits, &x, &kernel, &s);
    check("dense dx", &dx, &x, |x| loss(x, &kernel, &bias));
    check("dense dkernel (with L1)", &dkernel, &kernel, |k| loss(&x, k, &bias));
    check("dense dbias", &dbias, &bias, |b| loss(&x, &kernel, b));
}

#[test]
fn cross_entropy_is_stable_for_huge_logits() {
    let s = dense_softmax::DenseShape::new(1, 1, 3, 0.0);
    let (mut probs, mut dlogits, mut losses, mut predicted) =
        (vec![0.0f32; 3], vec![0.0f32; 3], vec![0.0f32; 1], vec![0u32; 1]);
    // Logits 1000, 0, −1000: a naive exp() overflows.
    dense_softmax::forward(
        &mut probs,
        &mut dlogits,
        &mut losses,
        &mut predicted,
        &[1.0],
        &[1000.0, 0.0, -1000.0],
        &[0.0; 3],
        &[1],
        &s,
    );
    assert_eq!(losses[0], 1000.0);
    assert_eq!(predicted[0], 0, "the largest logit is class 0");
    assert!(probs.iter().all(|p| p.is_finite()) && dlogits.iter().all(|d| d.is_finite()));
}

/// Every example of every registered layer kind, through the layer interface the engines use:
/// dL/dx and every trainable tensor's gradient against central differences of the f64 forward
/// pass (for the head: of its mean loss plus its penalty). A new layer kind is checked here by
/// registering it.
#[test]
fn every_registered_layer_kind_s_backward_pass_matches_finite_differences() {
    let mut checked = 0;
    for kind in REGISTRY {
        for (k, &(token, input)) in kind.examples.iter().enumerate() {
            let mut rng = Rng::new(100 + k as u64);
            let run = RunSettings { l1: 0.01, seed: 42 };
            let pass = Pass::Training { step: 3, first: 0 };
            let batch = 2;
            match parse_token(token).unwrap() {
                Parsed::Hidden(layer) => {
                    let at = LayerAt::place(layer.as_ref(), 1, token.into(), input, 0, 0).unwrap();
                    let c = Ctx { at: &at, batch, run };
                    let (params_len, state_len) = at.param_counts();
                    let x = random(&mut rng, batch * at.input_len(), 1.0);
                    let params = random(&mut rng, params_len, 0.5);
                    let r = random(&mut rng, batch * at.output_len(), 1.0);
                    let forward = |x: &[f64], params: &[f64]| {
                        let mut y = vec![0.0; batch * at.output_len()];
                        layer.forward(&c, pass, x, &mut y, params, &mut vec![0.0; state_len]);
                        y
                    };
                    let y = forward(&x, &params);
                    let (mut dx, mut grads) = (vec![f64::NAN; x.len()], vec![f64::NAN; params.len()]);
                    let b = Backward { x: &x, y: &y, dy: &r, dx: Some(&mut dx), params: &params, grads: &mut grads };
                    layer.backward(&c, pass, b);
                    check(&format!("{token} {input:?} dx"), &dx, &x, |x| dot(&forward(x, &params), &r));
                    if !params.is_empty() {
                        check(&format!("{token} {input:?} dθ"), &grads, &params, |p| dot(&forward(&x, p), &r));
                    }
                }
                Parsed::Head(head) => {
                    let at = LayerAt::place(head.as_ref(), 1, token.into(), input, 0, 0).unwrap();
                    let c = Ctx { at: &at, batch, run };
                    let classes = head.classes();
                    let x = random(&mut rng, batch * at.input_len(), 1.0);
                    let params = random(&mut rng, at.param_counts().0, 0.5);
                    let labels: Vec<u32> = (0..batch as u32).map(|n| n % classes as u32).collect();
                    let outputs = |x: &[f64], params: &[f64]| {
                        let (mut probs, mut dlogits) = (vec![0.0; batch * classes], vec![0.0; batch * classes]);
                        let (mut losses, mut predicted) = (vec![0.0; batch], vec![0u32; batch]);
                        let out = HeadOutputs {
                            probs: &mut probs,
                            dlogits: &mut dlogits,
                            losses: &mut losses,
                            predicted: &mut predicted,
                        };
                        head.forward(&c, x, params, &labels, batch, out);
                        (losses.iter().sum::<f64>() / batch as f64 + head.penalty(&c, params), dlogits)
                    };
                    let (_, dlogits) = outputs(&x, &params);
                    let (mut dx, mut grads) = (vec![f64::NAN; x.len()], vec![f64::NAN; params.len()]);
                    head.backward(&c, &x, &dlogits, Some(&mut dx), &params, &mut grads);
                    head.penalty_backward(&c, &params, &mut grads);
                    check(&format!("{token} {input:?} dx"), &dx, &x, |x| outputs(x, &params).0);
                    check(&format!("{token} {input:?} dθ"), &grads, &params, |p| outputs(&x, p).0);
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= REGISTRY.len() * 2, "{checked} examples");
}
