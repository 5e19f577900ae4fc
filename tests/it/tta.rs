//! The adaptation methods: reference values from PyTorch, and adapters on the tiny checkpoint.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use cliptta::model::{ClipModel, LoadOptions};
use cliptta::tta::{
    log_mcm_score, marginal_entropy, oce_loss, soft_contrastive_loss, tent_entropy, Adam, AdamConfig, Adapter,
    MethodConfig,
};

use crate::support::{fixture, floats, rel_max_err, to_f64};

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("tta-reference.json")).unwrap()).unwrap()
}

fn unit(x: &Tensor) -> Tensor {
    x.broadcast_div(&x.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap()).unwrap()
}

fn close(name: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{name}: {got} vs PyTorch {want}");
}

/// Loss values against tests/fixtures/tta-reference.json (PyTorch, float64).
#[test]
fn losses_match_pytorch() {
    let r = reference();
    let dev = Device::Cpu;
    let (n, k, d) = (r["n"].as_u64().unwrap() as usize, r["k"].as_u64().unwrap() as usize, r["d"].as_u64().unwrap() as usize);
    let t = Tensor::from_vec(floats(&r["t"]), (k, d), &dev).unwrap();
    let z = unit(&Tensor::from_vec(floats(&r["raw"]), (n, d), &dev).unwrap());
    let alpha = Tensor::from_vec(floats(&r["alpha"]), 1, &dev).unwrap();
    let s = |x: candle_core::Result<Tensor>| x.unwrap().to_scalar::<f64>().unwrap();
    close("soft contrastive", s(Ok(soft_contrastive_loss(&z, &t, 100.0).unwrap().unwrap())), r["soft_contrastive"].as_f64().unwrap());
    close("soft contrastive s=5", s(Ok(soft_contrastive_loss(&z, &t, 5.0).unwrap().unwrap())), r["soft_contrastive_scale_5"].as_f64().unwrap());
    close("marginal entropy", s(marginal_entropy(&z, &t, 100.0)), r["marginal_entropy"].as_f64().unwrap());
    close("tent", s(tent_entropy(&z, &t, 100.0)), r["tent"].as_f64().unwrap());
    close("tent s=5", s(tent_entropy(&z, &t, 5.0)), r["tent_scale_5"].as_f64().unwrap());
    let scores = log_mcm_score(&z.matmul(&t.t().unwrap()).unwrap()).unwrap();
    assert!(rel_max_err(&to_f64(&scores), &floats(&r["log_mcm"])) < 1e-12);
    close("oce", s(oce_loss(&scores, &alpha, 0.005)), r["oce"].as_f64().unwrap());
    close("oce gamma 0.1", s(oce_loss(&scores, &alpha, 0.1)), r["oce_gamma_01"].as_f64().unwrap());
}

/// Gradients and two Adam steps on the combined open-set objective against torch.optim.Adam.
#[test]
fn adam_steps_match_pytorch() {
    let r = reference();
    let dev = Device::Cpu;
    let (n, k, d) = (r["n"].as_u64().unwrap() as usize, r["k"].as_u64().unwrap() as usize, r["d"].as_u64().unwrap() as usize);
    let t = Tensor::from_vec(floats(&r["t"]), (k, d), &dev).unwrap();
    let raw = Var::from_vec(floats(&r["raw"]), (n, d), &dev).unwrap();
    let alpha = Var::from_vec(floats(&r["alpha"]), 1, &dev).unwrap();
    let mut adam = Adam::new(AdamConfig::with_lr(1e-2), &[&raw, &alpha]).unwrap();
    let mut losses = Vec::new();
    for step in 0..2 {
        let z = unit(raw.as_tensor());
        let scores = log_mcm_score(&z.matmul(&t.t().unwrap()).unwrap()).unwrap();
        let loss = ((soft_contrastive_loss(&z, &t, 5.0).unwrap().unwrap() - marginal_entropy(&z, &t, 5.0).unwrap()).unwrap()
            + oce_loss(&scores, alpha.as_tensor(), 0.1).unwrap())
        .unwrap();
        losses.push(loss.to_scalar::<f64>().unwrap());
        let grads = loss.backward().unwrap();
        let g_raw = grads.get(raw.as_tensor()).unwrap().clone();
        let g_alpha = grads.get(alpha.as_tensor()).unwrap().clone();
        if step == 0 {
            assert!(rel_max_err(&to_f64(&g_raw), &floats(&r["grad_raw"])) < 1e-9);
            assert!(rel_max_err(&to_f64(&g_alpha), &floats(&r["grad_alpha"])) < 1e-9);
        }
        adam.step(&[&raw, &alpha], &[g_raw, g_alpha]).unwrap();
    }
    assert!(rel_max_err(&losses, &floats(&r["adam_losses"])) < 1e-12);
    assert!(rel_max_err(&to_f64(raw.as_tensor()), &floats(&r["adam_raw_after_2"])) < 1e-9);
    assert!(rel_max_err(&to_f64(alpha.as_tensor()), &floats(&r["adam_alpha_after_2"])) < 1e-9);
}

fn tiny_model() -> Arc<ClipModel> {
    Arc::new(ClipModel::load(fixture("tiny-clip"), &LoadOptions::default()).unwrap())
}

fn classes() -> Vec<String> {
    ["cat", "dog", "bird", "ship"].iter().map(|s| s.to_string()).collect()
}

fn templates() -> Vec<String> {
    vec!["a photo of a {}".to_string()]
}

/// A reproducible stream of "shifted" batches: random images plus a common offset.
fn stream(batches: usize, size: usize, seed: u64) -> Vec<Tensor> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..batches)
        .map(|_| {
            let v: Vec<f32> = (0..size * 3 * 32 * 32).map(|_| rng.random::<f32>() * 2.0 - 1.0 + 0.3).collect();
            Tensor::from_vec(v, (size, 3, 32, 32), &Device::Cpu).unwrap()
        })
        .collect()
}

fn adapter(model: &Arc<ClipModel>, method: &str, open_set: bool, overrides: &[(&str, &str)]) -> Adapter {
    let mut m = MethodConfig::from_name(method, open_set).unwrap();
    for (k, v) in overrides {
        m.set(k, v).unwrap();
    }
    Adapter::new(model.clone(), &classes(), &templates(), m).unwrap()
}

/// CLIPTTA on the tiny checkpoint: the LayerNorms move, the loss falls within a batch, the
/// memory fills, and predictions do not collapse to one class.
#[test]
fn cliptta_adapts_without_collapse() {
    let model = tiny_model();
    for open_set in [false, true] {
        let mut a = adapter(&model, "cliptta", open_set, &[("lr", "1e-2")]);
        let before = a.params().snapshot().unwrap();
        let mut all_labels = Vec::new();
        for batch in stream(3, 16, 5) {
            let out = a.adapt_and_predict(&batch).unwrap();
            assert_eq!(out.losses().len(), 10);
            assert!(out.losses()[9] < out.losses()[0], "open_set={open_set}: loss did not fall: {:?}", out.losses());
            all_labels.extend(out.labels.clone());
            assert_eq!(out.threshold.is_some(), open_set);
            if open_set {
                let t = out.threshold.unwrap();
                assert!(out.ood_score.iter().zip(&out.is_ood).all(|(&s, &o)| o == (s <= t)));
            }
        }
        let moved: f64 = a
            .params()
            .vars()
            .iter()
            .zip(before.tensors())
            .map(|(v, b)| rel_max_err(&to_f64(v.as_tensor()), &to_f64(b)))
            .fold(0.0, f64::max);
        assert!(moved > 1e-3, "LayerNorms barely moved: {moved}");
        let distinct: std::collections::HashSet<_> = all_labels.iter().collect();
        assert!(distinct.len() >= 2, "collapsed to {distinct:?}");
        assert!(a.kept() > 0);
        assert_eq!(a.stats().steps, 30);
        assert_eq!(a.stats().skipped_steps, 0);
        a.reset().unwrap();
        assert_eq!(a.kept(), 0);
        assert_eq!(rel_max_err(&to_f64(a.params().vars()[0].as_tensor()), &to_f64(&before.tensors()[0])), 0.0);
    }
}

#[test]
fn zero_shot_and_tent_predict_every_image() {
    let model = tiny_model();
    let batch = &stream(1, 5, 9)[0];
    let mut z = adapter(&model, "zero_shot", false, &[]);
    let zs = z.adapt_and_predict(batch).unwrap();
    assert!(zs.losses().is_empty());
    assert_eq!(zs.labels.len(), 5);
    for p in &zs.probs {
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    let mut t = adapter(&model, "tent", false, &[]);
    let before = t.params().snapshot().unwrap();
    let out = t.adapt_and_predict(batch).unwrap();
    assert_eq!(out.losses().len(), 10);
    assert!(out.losses()[9] < out.losses()[0], "TENT's entropy did not fall: {:?}", out.losses());
    assert_eq!(out.labels.len(), 5);
    // TENT adapts the LayerNorms: every one of them moved, and only zero-shot left them.
    let moved: Vec<f64> =
        t.params().vars().iter().zip(before.tensors()).map(|(v, b)| rel_max_err(&to_f64(v.as_tensor()), &to_f64(b))).collect();
    assert!(moved.iter().all(|&m| m > 0.0), "some LayerNorms did not move: {moved:?}");
    assert!(z.params().vars().iter().zip(before.tensors()).all(|(v, b)| to_f64(v.as_tensor()) == to_f64(b)));
}

/// Stopping after a batch, saving, loading into a fresh adapter and continuing gives exactly the
/// predictions of an adapter that never stopped.
#[test]
fn save_load_continue_matches_never_stopping() {
    let model = tiny_model();
    let batches = stream(3, 12, 11);
    for open_set in [false, true] {
        let mut straight = adapter(&model, "cliptta", open_set, &[("lr", "1e-2")]);
        let expected: Vec<_> = batches.iter().map(|b| straight.adapt_and_predict(b).unwrap()).collect();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.safetensors");
        let mut first = adapter(&model, "cliptta", open_set, &[("lr", "1e-2")]);
        first.adapt_and_predict(&batches[0]).unwrap();
        first.save_state(&path).unwrap();
        drop(first);
        let mut resumed = adapter(&model, "cliptta", open_set, &[("lr", "1e-2")]);
        resumed.load_state(&path).unwrap();
        for (b, want) in batches[1..].iter().zip(&expected[1..]) {
            let got = resumed.adapt_and_predict(b).unwrap();
            assert_eq!(got, *want, "open_set={open_set}");
        }
        assert_eq!(resumed.stats(), straight.stats());

        // A state is only accepted by an adapter with the same settings.
        let mut other = adapter(&model, "cliptta", open_set, &[("lr", "2e-2")]);
        let err = other.load_state(&path).unwrap_err().to_string();
        assert!(err.contains("hyper-parameters"), "{err}");
    }
}

#[test]
fn guards_hold() {
    let model = tiny_model();
    // A batch of one is predicted without adapting.
    let mut a = adapter(&model, "cliptta", true, &[]);
    let one = &stream(1, 1, 3)[0];
    let out = a.adapt_and_predict(one).unwrap();
    assert_eq!((out.labels.len(), out.losses().len(), a.stats().unadapted_batches), (1, 0, 1));
    // An empty batch gives an empty prediction.
    let empty = Tensor::zeros((0, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    assert!(a.adapt_and_predict(&empty).unwrap().is_empty());
    // Non-finite input: every step is skipped and the weights stay.
    let mut c = adapter(&model, "cliptta", false, &[]);
    let before = c.params().snapshot().unwrap();
    let nan = (Tensor::ones((4, 3, 32, 32), DType::F32, &Device::Cpu).unwrap() * f64::NAN).unwrap();
    let out = c.adapt_and_predict(&nan).unwrap();
    assert_eq!(c.stats().skipped_steps, 10);
    assert!(out.losses().iter().all(|l| l.is_nan()));
    assert_eq!(to_f64(c.params().vars()[3].as_tensor()), to_f64(&before.tensors()[3]));
    // Identical images: open-set scores are all equal, Otsu returns that value, nothing breaks.
    let same = Tensor::ones((6, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let mut o = adapter(&model, "cliptta", true, &[]);
    let out = o.adapt_and_predict(&same).unwrap();
    assert_eq!(out.labels.len(), 6);
    // Identical inputs get identical, finite predictions, all on the same side of the batch's
    // (adapted) threshold.
    assert!(out.labels.iter().all(|&l| l == out.labels[0]), "{:?}", out.labels);
    assert!(out.confidence.iter().all(|&c| c == out.confidence[0] && c.is_finite()), "{:?}", out.confidence);
    assert!(out.ood_score.iter().all(|&s| s == out.ood_score[0] && s.is_finite()), "{:?}", out.ood_score);
    let threshold = out.threshold.expect("open set has a threshold");
    assert!(threshold.is_finite());
    assert!(out.is_ood.iter().all(|&o| o == (out.ood_score[0] <= threshold)), "{:?} at {threshold}", out.is_ood);
}

#[test]
fn episodic_reset_forgets_between_batches() {
    let model = tiny_model();
    let batches = stream(2, 8, 21);
    let mut episodic = adapter(&model, "cliptta", false, &[("reset", "per_batch"), ("lr", "1e-2")]);
    episodic.adapt_and_predict(&batches[0]).unwrap();
    let second = episodic.adapt_and_predict(&batches[1]).unwrap();
    let mut fresh = adapter(&model, "cliptta", false, &[("reset", "per_batch"), ("lr", "1e-2")]);
    assert_eq!(fresh.adapt_and_predict(&batches[1]).unwrap(), second);
    // The same stream adapted continually differs on the second batch, so the equality above
    // is the reset's doing.
    let mut continual = adapter(&model, "cliptta", false, &[("lr", "1e-2")]);
    continual.adapt_and_predict(&batches[0]).unwrap();
    let carried = continual.adapt_and_predict(&batches[1]).unwrap();
    assert_ne!(carried.losses(), second.losses(), "continual adaptation did not carry state into batch 2");
}

/// Entropy of each row and of the mean row, computed here from the returned probabilities.
fn entropies(probs: &[Vec<f32>]) -> (f64, f64) {
    let h = |p: &[f64]| -p.iter().filter(|&&x| x > 0.0).map(|&x| x * x.ln()).sum::<f64>();
    let rows: Vec<Vec<f64>> = probs.iter().map(|r| r.iter().map(|&x| x as f64).collect()).collect();
    let mean = rows.iter().map(|r| h(r)).sum::<f64>() / rows.len() as f64;
    let marginal: Vec<f64> = (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c]).sum::<f64>() / rows.len() as f64).collect();
    (mean, h(&marginal))
}

/// Each batch's diagnostics against the adapter's own outputs and an independent
/// recomputation: the terms add up to each step's loss, the entropies and classes are those of
/// the returned predictions, the distance is that of the LayerNorms from the checkpoint, and
/// TENT's first loss is the mean entropy of the zero-shot predictions.
#[test]
fn diagnostics_report_what_the_adapter_did() {
    let model = tiny_model();
    let batches = stream(3, 16, 5);
    for open_set in [false, true] {
        let mut a = adapter(&model, "cliptta", open_set, &[("lr", "1e-2")]);
        let initial = a.params().snapshot().unwrap();
        for batch in &batches {
            let out = a.adapt_and_predict(batch).unwrap();
            let d = out.diagnostics.clone().expect("an adapted batch has diagnostics");
            assert_eq!((d.rows, d.adapted, d.steps.len(), d.skipped_steps), (16, true, 10, 0));
            assert_eq!(d.losses(), out.losses());
            for step in &d.steps {
                let sum: f64 = step.terms.iter().map(|t| t.value as f64).sum();
                assert!((sum - step.loss as f64).abs() <= 1e-5 * (step.loss as f64).abs().max(1.0), "{step:?}");
            }
            let mut names = d.term_names();
            names.sort();
            let mut want = vec!["marginal_entropy", "memory_marginal_entropy", "memory_soft_contrastive", "soft_contrastive"];
            if open_set {
                want.push("oce");
                want.sort();
            }
            assert_eq!(names, want);
            let (mean, marginal) = entropies(&out.probs);
            assert!((d.mean_entropy as f64 - mean).abs() < 1e-5 && (d.marginal_entropy as f64 - marginal).abs() < 1e-5, "{d:?}");
            let distinct: std::collections::HashSet<_> = out.labels.iter().collect();
            assert_eq!(d.classes_predicted, distinct.len());
            assert_eq!(d.threshold, out.threshold);
            let id = out.is_ood.iter().filter(|&&o| !o).count() as f32 / 16.0;
            assert_eq!(d.id_fraction, open_set.then_some(id));
            let (mut diff, mut base) = (0.0, 0.0);
            for (v, t0) in a.params().vars().iter().zip(initial.tensors()) {
                let (v, t0) = (to_f64(v.as_tensor()), to_f64(t0));
                diff += v.iter().zip(&t0).map(|(x, y)| (x - y) * (x - y)).sum::<f64>();
                base += t0.iter().map(|y| y * y).sum::<f64>();
            }
            let distance = (diff / base).sqrt();
            assert!(distance > 0.0 && (d.distance as f64 - distance).abs() <= 1e-5 * distance, "{} vs {distance}", d.distance);
            assert!(d.seconds > 0.0);
        }
    }
    // TENT's first step is the entropy of the checkpoint's predictions, which zero-shot returns.
    let zero_shot = adapter(&model, "zero_shot", false, &[]).adapt_and_predict(&batches[0]).unwrap();
    let zd = zero_shot.diagnostics.clone().unwrap();
    assert_eq!((zd.adapted, zd.steps.len(), zd.distance), (false, 0, 0.0));
    let tent = adapter(&model, "tent", false, &[]).adapt_and_predict(&batches[0]).unwrap();
    let td = tent.diagnostics.unwrap();
    assert_eq!(td.term_names(), vec!["entropy"]);
    let (entropy, _) = entropies(&zero_shot.probs);
    assert!((td.loss_first().unwrap() as f64 - entropy).abs() < 1e-5, "{:?} vs {entropy}", td.loss_first());
    // A batch too small to adapt on is reported as such.
    let one = adapter(&model, "cliptta", false, &[]).adapt_and_predict(&stream(1, 1, 3)[0]).unwrap();
    let od = one.diagnostics.unwrap();
    assert_eq!((od.adapted, od.steps.len(), od.rows), (false, 0, 1));
}
