//! Arrow arrays from pyarrow, read in place through the Arrow PyCapsule interface
//! (`__arrow_c_array__`: the C data interface's `ArrowSchema` and `ArrowArray`).

use arrow_array::ffi::{from_ffi, FFI_ArrowArray};
use arrow_array::{make_array, ArrayRef};
use arrow_schema::ffi::FFI_ArrowSchema;
use arrow_schema::Field;
use feedkit_core::Error;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use crate::errors::to_py;

/// `obj`'s array and its field, sharing pyarrow's buffers (nothing is copied). `obj` is
/// anything with `__arrow_c_array__`: a pyarrow `Array`, or a `RecordBatch`, which comes
/// as a struct array of its columns. The array is checked (`validate_full`: buffer
/// sizes, offsets, UTF-8, dictionary keys) before anything reads it.
///
/// Errors: the Python error `__arrow_c_array__` raised, or a `ValidationError` saying
/// `{what} is not valid Arrow data` for arrays the C data interface or arrow-rs refuse.
pub fn import(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Field, ArrayRef)> {
    let (schema, array): (Bound<'_, PyCapsule>, Bound<'_, PyCapsule>) =
        obj.call_method0("__arrow_c_array__")?.extract()?;
    let schema = schema.pointer_checked(Some(c"arrow_schema"))?.cast::<FFI_ArrowSchema>();
    let array = array.pointer_checked(Some(c"arrow_array"))?.cast::<FFI_ArrowArray>();
    // SAFETY: the Arrow PyCapsule interface hands out, in capsules named "arrow_schema"
    // and "arrow_array" (names checked above), pointers to a valid ArrowSchema and
    // ArrowArray owned by the capsules, which live until this function returns.
    // `from_raw` moves the array out and leaves a released one behind (its `release` is
    // null), as the C data interface's move semantics prescribe, so the capsule's
    // destructor will not release it a second time; the imported data then owns it and
    // releases it when the last ArrayRef drops. The schema is only borrowed, and copied
    // into `Field`/`DataType` values before the capsule goes.
    let imported = unsafe {
        let schema = schema.as_ref();
        Field::try_from(schema)
            .and_then(|field| Ok((field, from_ffi(FFI_ArrowArray::from_raw(array.as_ptr()), schema)?)))
    };
    imported
        .and_then(|(field, data)| {
            data.validate_full()?;
            Ok((field, make_array(data)))
        })
        .map_err(|e| to_py(obj.py(), Error::invalid(format!("{what} is not valid Arrow data ({e})"))))
}
