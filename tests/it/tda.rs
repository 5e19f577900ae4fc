//! TDA against the official class run unchanged (tests/fixtures/tda-reference.json, written by
//! tests/fixtures/make_tda_reference.py), and through the adapter on the tiny checkpoint.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use cliptta::model::{ClipModel, LoadOptions};
use cliptta::tta::{Adapter, CacheUpdate, MethodConfig, MethodSettings, TdaCaches, TdaConfig};

use crate::support::{fixture, floats, rel_max_err};

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("tda-reference.json")).unwrap()).unwrap()
}

fn rows(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(floats).collect()
}

fn action(v: &serde_json::Value) -> Option<CacheUpdate> {
    match v["action"].as_str().unwrap() {
        "created" => Some(CacheUpdate::Created),
        "appended" => Some(CacheUpdate::Appended),
        "replaced" => Some(CacheUpdate::Replaced),
        "rejected" => Some(CacheUpdate::Rejected),
        "skipped" => None,
        other => panic!("unknown cache action `{other}`"),
    }
}

fn max_softmax(x: &[f64]) -> f64 {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    1.0 / x.iter().map(|v| (v - m).exp()).sum::<f64>()
}

/// Every image of the official stream: the same cache decisions, final logits, prediction
/// and score, and the same caches at the end.
#[test]
fn tda_matches_the_official_class() {
    let r = reference();
    let prototypes = rows(&r["inputs"]["prototypes"]);
    let features = rows(&r["features_normalized"]);
    let mut caches = TdaCaches::new(TdaConfig::official(false), prototypes.len());
    let mut decisions = 0;
    for step in r["per_image"].as_array().unwrap() {
        let t = step["t"].as_u64().unwrap();
        let f = &features[step["embedding_index"].as_u64().unwrap() as usize];
        let cos: Vec<f64> = prototypes.iter().map(|p| p.iter().zip(f).map(|(a, b)| a * b).sum()).collect();
        let got = caches.step(f, &cos);
        assert_eq!(got.class as u64, step["pred_cache_class"].as_u64().unwrap(), "t={t}: cache class");
        assert!(rel_max_err(&[got.loss], &[step["loss_entropy_nat"].as_f64().unwrap()]) < 1e-9, "t={t}: entropy");
        assert_eq!(Some(got.positive), action(&step["pos_cache"]), "t={t}: positive cache");
        assert_eq!(got.negative, action(&step["neg_cache"]), "t={t}: negative cache");
        let want = floats(&step["final_logits"]);
        assert!(rel_max_err(&got.logits, &want) < 1e-9, "t={t}: final logits {:?} vs {want:?}", got.logits);
        let pred = (0..want.len()).max_by(|&a, &b| got.logits[a].total_cmp(&got.logits[b])).unwrap();
        assert_eq!(pred as u64, step["pred"].as_u64().unwrap(), "t={t}: prediction");
        assert!(rel_max_err(&[max_softmax(&got.logits)], &[step["score"].as_f64().unwrap()]) < 1e-9, "t={t}: score");
        decisions += 1;
    }
    assert_eq!(decisions, 40);
    for (name, cache) in [("positive", &r["final_cache"]["positive"]), ("negative", &r["final_cache"]["negative"])] {
        for (class, entries) in cache.as_object().unwrap() {
            let class: usize = class.parse().unwrap();
            let ours = if name == "positive" { caches.positive(class) } else { caches.negative(class) };
            let want = entries.as_array().unwrap();
            assert_eq!(ours.len(), want.len(), "{name} cache of class {class}");
            for (e, w) in ours.iter().zip(want) {
                assert_eq!(e.feature, features[w["index"].as_u64().unwrap() as usize], "{name} cache of class {class}: entry order");
                assert!(rel_max_err(&[e.loss], &[w["loss"].as_f64().unwrap()]) < 1e-9);
                if name == "negative" {
                    assert!(rel_max_err(&e.probs, &floats(&w["prob_map"])) < 1e-9);
                }
            }
        }
    }
}

fn tiny_model() -> Arc<ClipModel> {
    Arc::new(ClipModel::load(fixture("tiny-clip"), &LoadOptions::default()).unwrap())
}

fn tda(model: &Arc<ClipModel>, overrides: &[(&str, &str)]) -> Adapter {
    let mut m = MethodConfig::from_name("tda", false).unwrap();
    for (k, v) in overrides {
        m.set(k, v).unwrap();
    }
    let classes: Vec<String> = ["cat", "dog", "bird", "ship"].iter().map(|s| s.to_string()).collect();
    Adapter::new(model.clone(), &classes, &["a photo of a {}".to_string()], m).unwrap()
}

fn images(n: usize, seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * 3 * 32 * 32).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, (n, 3, 32, 32), &Device::Cpu).unwrap()
}

/// Through the adapter, TDA's predictions are those of the caches driven image by image with
/// the adapter's own embeddings: the cache logits, not CLIP's, decide; and TDA takes one image
/// at a time, so the adaptation batch size does not change its output.
#[test]
fn tda_in_the_adapter_is_the_caches_image_by_image() {
    let model = tiny_model();
    let pixels = images(24, 5);
    let mut whole = tda(&model, &[]);
    let out = whole.adapt_and_predict(&pixels).unwrap();
    assert_eq!(whole.stats().steps, 0, "TDA trains nothing");
    assert!(whole.kept() > 0);

    let zero = {
        let classes: Vec<String> = ["cat", "dog", "bird", "ship"].iter().map(|s| s.to_string()).collect();
        let mut z = Adapter::new(model.clone(), &classes, &["a photo of a {}".to_string()], MethodConfig::from_name("zero_shot", false).unwrap()).unwrap();
        z.adapt_and_predict(&pixels).unwrap()
    };
    assert_eq!(out.embeddings, zero.embeddings, "TDA leaves the encoder as it is");
    let mut caches = TdaCaches::new(TdaConfig::official(false), 4);
    let class_embeddings = model.class_embeddings(&["cat", "dog", "bird", "ship"].map(String::from), &["a photo of a {}".to_string()]).unwrap();
    let text: Vec<Vec<f64>> = class_embeddings.to_dtype(candle_core::DType::F64).unwrap().to_vec2().unwrap();
    for (i, z) in out.embeddings.iter().enumerate() {
        let f: Vec<f64> = z.iter().map(|&x| x as f64).collect();
        let cos: Vec<f64> = text.iter().map(|p| p.iter().zip(&f).map(|(a, b)| a * b).sum()).collect();
        let logits = caches.step(&f, &cos).logits;
        let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let probs: Vec<f64> = logits.iter().map(|v| (v - m).exp()).collect();
        let sum: f64 = probs.iter().sum();
        let got: Vec<f64> = out.probs[i].iter().map(|&p| p as f64).collect();
        let want: Vec<f64> = probs.iter().map(|p| p / sum).collect();
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4), "image {i}: {got:?} vs {want:?}");
        assert!((out.ood_score[i] as f64 - want.iter().copied().fold(0.0, f64::max)).abs() < 1e-4, "image {i}: score");
    }

    let mut in_threes = tda(&model, &[]);
    let mut labels = Vec::new();
    for b in 0..8 {
        labels.extend(in_threes.adapt_and_predict(&pixels.narrow(0, b * 3, 3).unwrap()).unwrap().labels);
    }
    assert_eq!(labels, out.labels);
}

/// A saved TDA state holds the caches: a resumed stream gives what an unbroken one gives, and
/// a reset or an episodic run forgets them.
#[test]
fn tda_state_saves_its_caches_exactly() {
    let model = tiny_model();
    let batches: Vec<Tensor> = (0..3).map(|i| images(10, 20 + i)).collect();
    let mut straight = tda(&model, &[]);
    let expected: Vec<_> = batches.iter().map(|b| straight.adapt_and_predict(b).unwrap()).collect();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.safetensors");
    let mut first = tda(&model, &[]);
    first.adapt_and_predict(&batches[0]).unwrap();
    first.save_state(&path).unwrap();
    let kept = first.kept();
    drop(first);
    let mut resumed = tda(&model, &[]);
    resumed.load_state(&path).unwrap();
    assert_eq!(resumed.kept(), kept);
    for (b, want) in batches[1..].iter().zip(&expected[1..]) {
        assert_eq!(resumed.adapt_and_predict(b).unwrap(), *want);
    }
    let err = tda(&model, &[("pos_alpha", "1.5")]).load_state(&path).unwrap_err().to_string();
    assert!(err.contains("hyper-parameters"), "{err}");

    resumed.reset().unwrap();
    assert_eq!(resumed.kept(), 0);
    let mut episodic = tda(&model, &[("reset", "per_batch")]);
    let fresh = tda(&model, &[]).adapt_and_predict(&batches[2]).unwrap();
    for b in &batches[..2] {
        episodic.adapt_and_predict(b).unwrap();
    }
    assert_eq!(episodic.adapt_and_predict(&batches[2]).unwrap(), fresh, "per_batch starts every batch with empty caches");
}
