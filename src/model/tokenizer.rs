//! `tokenizer.json` through the `tokenizers` crate, with CLIP's context-length handling.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A CLIP tokenizer: the checkpoint's own normaliser (lower-casing), pre-tokeniser, model and
/// post-processor (start/end-of-text tokens), truncated to the context length.
#[derive(Debug)]
pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    context_length: usize,
    eos_id: u32,
}

impl ClipTokenizer {
    /// Loads `tokenizer.json`; sequences are cut to `context_length` tokens.
    pub fn from_file(path: &Path, context_length: usize) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| Error::Tokenizer { path: path.to_path_buf(), message: e.to_string() })?;
        let mut tok = Self { inner, path: path.to_path_buf(), context_length, eos_id: 0 };
        // The post-processor appends the end-of-text token even to an empty text.
        let empty = tok.raw_ids("")?;
        tok.eos_id = *empty.last().ok_or_else(|| Error::Tokenizer {
            path: path.to_path_buf(),
            message: "the tokenizer adds no end-of-text token (expected a post-processor like CLIP's)".into(),
        })?;
        Ok(tok)
    }

    fn raw_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), message: format!("cannot encode {text:?}: {e}") })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids with start and end tokens; a long text is cut so that it still ends with the
    /// end-of-text token, as transformers does with `truncation=True`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.raw_ids(text)?;
        if ids.len() > self.context_length {
            ids.truncate(self.context_length);
            if let Some(last) = ids.last_mut() {
                *last = self.eos_id;
            }
        }
        Ok(ids)
    }

    /// The end-of-text token id.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Size of the vocabulary including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
