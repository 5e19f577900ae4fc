//! MLP activations named by `hidden_act` in CLIP configs.

use candle_core::{Result, Tensor};

/// An MLP activation; every variant is differentiable in candle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI CLIP's activation (`quick_gelu`).
    QuickGelu,
    /// Exact GELU with erf (`gelu`).
    Gelu,
    /// GELU's tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// `relu`.
    Relu,
}

impl Activation {
    /// Maps a transformers `hidden_act` string; `None` when unsupported.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "quick_gelu" => Some(Self::QuickGelu),
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }

    /// The transformers name of this activation.
    pub fn hf_name(&self) -> &'static str {
        match self {
            Self::QuickGelu => "quick_gelu",
            Self::Gelu => "gelu",
            Self::GeluTanh => "gelu_new",
            Self::Relu => "relu",
        }
    }

    /// Applies the activation element-wise.
    pub fn apply(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::QuickGelu if super::fused::supported(xs) => super::fused::quick_gelu(xs),
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Self::Gelu => xs.gelu_erf(),
            Self::GeluTanh => xs.gelu(),
            Self::Relu => xs.relu(),
        }
    }
}
