//! UniEnt against the official class run unchanged (tests/fixtures/unient-reference.json,
//! written by tests/fixtures/make_unient_reference.py): the mixture's split, the weights, the
//! loss, its gradients and two Adam steps per batch over two batches, on a stand-in encoder
//! whose only parameters are one LayerNorm, as in the reference.

use candle_core::{DType, Device, Tensor, Var, D};
use cliptta::model::differentiable_layer_norm;
use cliptta::tta::{unient_loss, unient_weights, Adam, AdamConfig, MethodSettings, UniEntConfig};

use crate::support::{fixture, floats, rel_max_err, to_f64};

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("unient-reference.json")).unwrap()).unwrap()
}

fn matrix(v: &serde_json::Value) -> Tensor {
    let rows: Vec<Vec<f64>> = v.as_array().unwrap().iter().map(floats).collect();
    let (n, d) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (n, d), &Device::Cpu).unwrap()
}

fn unit(x: &Tensor) -> Tensor {
    x.broadcast_div(&x.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap()).unwrap()
}

fn close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    let err = rel_max_err(got, want);
    assert!(err < tol, "{what}: relative error {err:e}\n got {got:?}\nwant {want:?}");
}

#[test]
fn unient_matches_the_official_class() {
    let r = reference();
    let t = matrix(&r["inputs"]["prototypes"]);
    let x = matrix(&r["inputs"]["x_raw"]);
    let ln = &r["inputs"]["ln"];
    let eps = ln["eps"].as_f64().unwrap();
    let weight = Var::from_vec(floats(&ln["weight_init"]), floats(&ln["weight_init"]).len(), &Device::Cpu).unwrap();
    let bias = Var::from_vec(floats(&ln["bias_init"]), floats(&ln["bias_init"]).len(), &Device::Cpu).unwrap();
    let hp = &r["hyper_parameters"];
    let mut config = UniEntConfig::official(true);
    config.adam = AdamConfig { lr: hp["lr"].as_f64().unwrap(), ..AdamConfig::with_lr(1.0) };
    assert_eq!((config.adam.beta1, config.adam.beta2, config.adam.eps), (0.9, 0.999, 1e-6), "the official Adam");
    assert!(!hp["use_ood_loss"].as_bool().unwrap() && !config.use_ood_loss);
    assert_eq!((config.beta_tta, config.beta_reg, config.logit_scale), (1.0, 1.0, 100.0));
    let mut adam = Adam::new(config.adam, &[&weight, &bias]).unwrap();
    let features = |rows: &Tensor| unit(&differentiable_layer_norm(&x.index_select(rows, 0).unwrap(), weight.as_tensor(), bias.as_tensor(), eps).unwrap());
    let mut checked = 0;
    for batch in r["batches"].as_array().unwrap() {
        let rows: Vec<u32> = batch["rows"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let rows = Tensor::new(rows.as_slice(), &Device::Cpu).unwrap();
        for step in batch["steps"].as_array().unwrap() {
            let at = format!("batch {} step {}", batch["batch"], step["step"]);
            let z = features(&rows);
            close(&format!("{at}: features"), &to_f64(&z), &to_f64(&matrix(&step["features"])), 1e-12);
            let cos = z.matmul(&t.t().unwrap()).unwrap();
            let w = unient_weights(&cos.detach(), config.logit_scale).unwrap();
            let gmm = &step["gmm"];
            let m = w.mixture.as_ref().expect("a spread batch has a mixture");
            assert!(gmm["partitions_equal"].as_bool().unwrap(), "{at}: the reference's k-means found another partition");
            assert_eq!(m.iterations as u64, gmm["fitted"]["n_iter"].as_u64().unwrap(), "{at}: EM iterations");
            assert!(m.converged);
            // sklearn's component order follows its k-means labels; compare as sets.
            let mut ours: Vec<(f64, f64, f64)> = (0..2).map(|k| (m.means[k], m.variances[k], m.weights[k])).collect();
            let f = &gmm["fitted"];
            let mut theirs: Vec<(f64, f64, f64)> =
                (0..2).map(|k| (floats(&f["means"])[k], floats(&f["covariances"])[k], floats(&f["weights"])[k])).collect();
            ours.sort_by(|a, b| a.0.total_cmp(&b.0));
            theirs.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (o, t) in ours.iter().zip(&theirs) {
                close(&format!("{at}: mixture"), &[o.0, o.1, o.2], &[t.0, t.1, t.2], 1e-9);
            }
            let abs_err = w.id.iter().zip(floats(&step["weight_id"])).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(abs_err < 1e-9, "{at}: weight_id off by {abs_err:e}");
            let loss = unient_loss(&z, &t, &w, &config).unwrap();
            close(&format!("{at}: loss"), &[loss.to_scalar::<f64>().unwrap()], &[step["loss"].as_f64().unwrap()], 1e-10);
            let grads = loss.backward().unwrap();
            let (gw, gb) = (grads.get(weight.as_tensor()).unwrap().clone(), grads.get(bias.as_tensor()).unwrap().clone());
            close(&format!("{at}: weight gradient"), &to_f64(&gw), &floats(&step["grad"]["weight"]), 1e-8);
            close(&format!("{at}: bias gradient"), &to_f64(&gb), &floats(&step["grad"]["bias"]), 1e-8);
            adam.step(&[&weight, &bias], &[gw, gb]).unwrap();
            close(&format!("{at}: weight after"), &to_f64(weight.as_tensor()), &floats(&step["ln_after"]["weight"]), 1e-9);
            close(&format!("{at}: bias after"), &to_f64(bias.as_tensor()), &floats(&step["ln_after"]["bias"]), 1e-9);
            checked += 1;
        }
        let z = features(&rows);
        let cos = z.matmul(&t.t().unwrap()).unwrap();
        let scores = candle_nn::ops::softmax_last_dim(&cos).unwrap().max(D::Minus1).unwrap();
        close("final scores", &to_f64(&scores), &floats(&batch["final"]["scores"]), 1e-9);
        let labels = (cos * 100.0).unwrap().argmax(D::Minus1).unwrap().to_dtype(DType::F64).unwrap();
        assert_eq!(to_f64(&labels), floats(&batch["final"]["predictions"]));
    }
    assert_eq!(checked, 4);
    close("final weight", &to_f64(weight.as_tensor()), &floats(&r["ln_final"]["weight"]), 1e-9);
}

/// Where the official code stops (every score equal: min-max normalisation divides by zero and
/// scikit-learn refuses the NaNs), the port weighs every image ½ instead of failing the batch.
#[test]
fn a_batch_without_spread_is_weighed_evenly() {
    let r = reference();
    assert_eq!(r["degenerate_batch"]["raised"], "ValueError", "the official code raises on it");
    let cos = Tensor::new(&[[0.3f64, 0.1], [0.3, 0.1], [0.3, 0.1]], &Device::Cpu).unwrap();
    let w = unient_weights(&cos, 100.0).unwrap();
    assert!(w.mixture.is_none());
    assert_eq!(w.id, [0.5; 3]);
}

fn tiny_adapter(overrides: &[(&str, &str)]) -> cliptta::tta::Adapter {
    use std::sync::Arc;
    let model = Arc::new(cliptta::model::ClipModel::load(fixture("tiny-clip"), &cliptta::model::LoadOptions::default()).unwrap());
    let mut m = cliptta::tta::MethodConfig::from_name("unient", true).unwrap();
    for (k, v) in overrides {
        m.set(k, v).unwrap();
    }
    let classes: Vec<String> = ["cat", "dog", "bird", "ship"].iter().map(|s| s.to_string()).collect();
    cliptta::tta::Adapter::new(model, &classes, &["a photo of a {}".to_string()], m).unwrap()
}

fn images(n: usize, seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * 3 * 32 * 32).map(|_| rng.random::<f32>() * 2.0 - 1.0 + 0.3).collect();
    Tensor::from_vec(v, (n, 3, 32, 32), &Device::Cpu).unwrap()
}

/// Through the adapter on the tiny checkpoint: UniEnt trains the LayerNorms (every step
/// taken), flags OOD by its mixture in the open set, and a saved state continues exactly.
#[test]
fn unient_adapts_and_resumes_exactly() {
    let batches: Vec<Tensor> = (0..3).map(|i| images(12, 40 + i)).collect();
    let mut straight = tiny_adapter(&[("lr", "1e-2"), ("steps", "2")]);
    let expected: Vec<_> = batches.iter().map(|b| straight.adapt_and_predict(b).unwrap()).collect();
    assert_eq!(straight.stats().steps, 6);
    assert!(expected.iter().all(|p| p.losses().len() == 2 && p.losses().iter().all(|l| l.is_finite())));
    assert!(expected.iter().all(|p| p.threshold.is_none() && p.is_ood.len() == 12));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.safetensors");
    let mut first = tiny_adapter(&[("lr", "1e-2"), ("steps", "2")]);
    first.adapt_and_predict(&batches[0]).unwrap();
    first.save_state(&path).unwrap();
    let mut resumed = tiny_adapter(&[("lr", "1e-2"), ("steps", "2")]);
    resumed.load_state(&path).unwrap();
    for (b, want) in batches[1..].iter().zip(&expected[1..]) {
        assert_eq!(resumed.adapt_and_predict(b).unwrap(), *want);
    }
}
