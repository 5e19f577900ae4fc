//! Keyword arguments as cliptta options: the names are SQL's (`steps`, `lr`, `open_set`,
//! `adapt_batch_size`, ...), and the values go through the same parser as SQL's and the
//! command line's, so they are validated the same way.

use cliptta::sql::{ClipTtaOptions, OptionValue};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

/// The options of a call: `classes`, `method`, then every keyword argument (object-store keys
/// such as `aws_endpoint` included, as in SQL).
pub fn parse(classes: &Bound<'_, PyAny>, method: &str, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<ClipTtaOptions> {
    let mut pairs = vec![("classes".to_string(), value("classes", classes)?), ("method".to_string(), OptionValue::Text(method.to_string()))];
    if let Some(kwargs) = kwargs {
        for (key, v) in kwargs.iter() {
            let key: String = key.extract()?;
            let parsed = value(&key, &v)?;
            pairs.push((key, parsed));
        }
    }
    ClipTtaOptions::parse(&pairs).map_err(|errors| PyValueError::new_err(errors.join("\n")))
}

/// One value: a string, number or bool as text (`True` is `true`), a list or tuple of strings as
/// a list.
fn value(key: &str, v: &Bound<'_, PyAny>) -> PyResult<OptionValue> {
    if v.is_instance_of::<PyBool>() {
        let b: bool = v.extract()?;
        return Ok(OptionValue::Text(b.to_string()));
    }
    if v.is_instance_of::<PyString>() || v.is_instance_of::<PyInt>() || v.is_instance_of::<PyFloat>() {
        return Ok(OptionValue::Text(v.str()?.to_string()));
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let items: Vec<String> = v.extract().map_err(|_| PyTypeError::new_err(format!("`{key}`: a list must hold strings")))?;
        return Ok(OptionValue::List(items));
    }
    Err(PyTypeError::new_err(format!("`{key}`: expected a str, int, float, bool or list of str, got {}", v.get_type().name()?)))
}
