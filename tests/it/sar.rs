//! SAR against the official class run unchanged (tests/fixtures/sar-reference.json, written by
//! tests/fixtures/make_sar_reference.py): the two reliability filters, SAM's perturbation, the
//! loss at the perturbed weights, Adam's update, the moving average and the model recovery,
//! over two batches of two steps, on the same stand-in encoder as the UniEnt reference.

use candle_core::{DType, Device, Tensor, Var, D};
use cliptta::model::differentiable_layer_norm;
use cliptta::tta::{row_entropies, AdamConfig, MethodSettings, SarConfig, SarOptimizer};

use crate::support::{fixture, floats, rel_max_err, to_f64};

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

fn indices(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn sar_matches_the_official_class() {
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("sar-reference.json")).unwrap()).unwrap();
    let t = matrix(&r["inputs"]["prototypes"]);
    let x = matrix(&r["inputs"]["x_raw"]);
    let ln = &r["inputs"]["ln"];
    let eps = ln["eps"].as_f64().unwrap();
    let (w0, b0) = (floats(&ln["weight_init"]), floats(&ln["bias_init"]));
    let weight = Var::from_vec(w0.clone(), w0.len(), &Device::Cpu).unwrap();
    let bias = Var::from_vec(b0.clone(), b0.len(), &Device::Cpu).unwrap();
    let initial = [Tensor::new(w0.as_slice(), &Device::Cpu).unwrap(), Tensor::new(b0.as_slice(), &Device::Cpu).unwrap()];
    let used = &r["hyper_parameters"]["used"];
    let mut config = SarConfig::official(false);
    assert_eq!((config.rho, config.alpha_entropy, config.recovery_threshold), (0.05, 0.4, 0.2), "the official defaults");
    assert_eq!((config.adam.lr, config.steps), (1e-3, 1), "the official defaults");
    config.adam = AdamConfig { lr: used["lr"].as_f64().unwrap(), ..config.adam };
    let k = r["inputs"]["K"].as_u64().unwrap() as usize;
    let vars = [&weight, &bias];
    let mut sar = SarOptimizer::new(config, &vars, k).unwrap();
    let mut steps = 0;
    let mut recoveries = 0;
    for batch in r["batches"].as_array().unwrap() {
        let rows = Tensor::new(indices(&batch["rows"]).as_slice(), &Device::Cpu).unwrap();
        let features = || unit(&differentiable_layer_norm(&x.index_select(&rows, 0).unwrap(), weight.as_tensor(), bias.as_tensor(), eps).unwrap());
        let entropies = || Ok(row_entropies(&(features().matmul(&t.t().unwrap())? * 100.0)?)?);
        for step in batch["steps"].as_array().unwrap() {
            let at = format!("batch {} step {}", batch["batch"], step["step"]);
            close(&format!("{at}: entropies"), &to_f64(&entropies().unwrap()), &floats(&step["entropys"]), 1e-10);
            let got = sar.step(&vars, &initial, entropies).unwrap().expect("finite gradients");
            assert_eq!(got.reliable, indices(&step["filter_ids_1"]), "{at}: first filter");
            assert_eq!(got.kept, indices(&step["filter_ids_2"]), "{at}: second filter");
            close(&format!("{at}: first loss"), &[got.loss_first], &[step["loss_first"].as_f64().unwrap()], 1e-10);
            close(&format!("{at}: gradient norm"), &[got.grad_norm], &[step["grad_norm"].as_f64().unwrap()], 1e-9);
            close(&format!("{at}: second loss"), &[got.loss_second], &[step["loss_second"].as_f64().unwrap()], 1e-9);
            close(&format!("{at}: moving average"), &[sar.ema().unwrap()], &[step["ema"].as_f64().unwrap()], 1e-9);
            assert_eq!(got.recovered, step["reset_fired"].as_bool().unwrap(), "{at}: recovery");
            let (want_w, want_b) = if got.recovered {
                (w0.clone(), b0.clone())
            } else {
                (floats(&step["updated"]["weight"]), floats(&step["updated"]["bias"]))
            };
            close(&format!("{at}: weight after"), &to_f64(weight.as_tensor()), &want_w, 1e-9);
            close(&format!("{at}: bias after"), &to_f64(bias.as_tensor()), &want_b, 1e-9);
            steps += 1;
            recoveries += usize::from(got.recovered);
        }
        let cos = features().matmul(&t.t().unwrap()).unwrap();
        let scores = candle_nn::ops::softmax_last_dim(&cos).unwrap().max(D::Minus1).unwrap();
        close("final scores", &to_f64(&scores), &floats(&batch["final"]["scores"]), 1e-9);
        let labels = (cos * 100.0).unwrap().argmax(D::Minus1).unwrap().to_dtype(DType::F64).unwrap();
        assert_eq!(to_f64(&labels), floats(&batch["final"]["predictions"]));
    }
    assert_eq!((steps, recoveries), (4, 2), "both batches, and the recovery, exercised");
    close("final moving average", &[sar.ema().unwrap()], &[r["ema_final"].as_f64().unwrap()], 1e-9);
}
