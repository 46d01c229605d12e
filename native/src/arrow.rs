//! Arrow arrays from pyarrow, read in place through the Arrow PyCapsule interface
//! (`__arrow_c_array__`: the C data interface's `ArrowSchema` and `ArrowArray`).

use arrow_array::ffi::{from_ffi, FFI_ArrowArray};
use arrow_array::{make_array, ArrayRef};
use arrow_data::{ArrayData, ArrayDataBuilder};
use arrow_schema::ffi::FFI_ArrowSchema;
use arrow_schema::Field;
use arrow_schema::{ArrowError, DataType};
use feedkit_core::Error;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use crate::errors::to_py;

/// `obj`'s array and its field, sharing pyarrow's buffers (nothing is copied). `obj` is
/// anything with `__arrow_c_array__`: a pyarrow `Array`, or a `RecordBatch`, which comes
/// as a struct array of its columns. Its layout is checked (`validate`: buffer sizes
/// and child lengths), not every value: `validate_full` would check a sliced list's
/// whole child (all the table's values, once per batch), and the encoder copies bytes
/// without building `str`s (no UTF-8 is assumed), indexes with bounds checks, and runs
/// where a panic becomes an error.
///
/// Errors: the Python error `__arrow_c_array__` raised, or a `ValidationError` saying
/// `{what} is not valid Arrow data` for arrays the C data interface or arrow-rs refuse.
pub fn import(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Field, ArrayRef)> {
    let (schema, array): (Bound<'_, PyCapsule>, Bound<'_, PyCapsule>) =
        obj.call_method0("__arrow_c_array__")?.extract()?;
    let schema = schema
        .pointer_checked(Some(c"arrow_schema"))?
        .cast::<FFI_ArrowSchema>();
    let array = array
        .pointer_checked(Some(c"arrow_array"))?
        .cast::<FFI_ArrowArray>();
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
        Field::try_from(schema).and_then(|field| {
            Ok((
                field,
                from_ffi(FFI_ArrowArray::from_raw(array.as_ptr()), schema)?,
            ))
        })
    };
    imported
        .and_then(|(field, data)| {
            let data = unnest_struct_offsets(data)?;
            data.validate()?;
            Ok((field, make_array(data)))
        })
        .map_err(|e| {
            to_py(
                obj.py(),
                Error::invalid(format!("{what} is not valid Arrow data ({e})")),
            )
        })
}

/// `data` with every struct and fixed-size list at offset 0, over children cut to its
/// rows.
///
/// In the C data interface a struct's offset applies to its children (and a fixed-size
/// list's, times its size, to its values), and arrow-rs honours that when it makes a
/// `StructArray` or a `FixedSizeListArray`: it slices the children. But arrow-rs's
/// `ArrayData::slice` of a struct both shifts its offset and slices its children, so a
/// struct sliced that way by its parent is sliced twice, and `make_array` panics
/// (pyarrow exports `struct<struct<...>>` or `fixed_size_list<struct<...>>` columns of
/// a sliced batch so). With the offsets pushed down to the leaves first, there is
/// nothing left to slice twice.
fn unnest_struct_offsets(data: ArrayData) -> Result<ArrayData, ArrowError> {
    let cut = match data.data_type() {
        DataType::Struct(_) => Some((data.offset(), data.len())),
        DataType::FixedSizeList(_, size) => {
            let size = *size as usize;
            Some((data.offset() * size, data.len() * size))
        }
        _ if data.child_data().is_empty() => return Ok(data), // a leaf
        _ => None, // lists, maps, dictionaries: their offsets (or keys) say where to read
    };
    let children = data
        .child_data()
        .iter()
        .map(|child| match cut {
            Some((offset, len)) => unnest_struct_offsets(rows(child, offset, len)?),
            None => unnest_struct_offsets(child.clone()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    ArrayDataBuilder::new(data.data_type().clone())
        .len(data.len())
        .offset(if cut.is_some() { 0 } else { data.offset() })
        .buffers(data.buffers().to_vec())
        .nulls(data.nulls().cloned()) // a NullBuffer is already cut to the array's rows
        .child_data(children)
        .build()
}

/// Rows `[offset, offset + len)` of `child`, in the C data interface's sense: a struct
/// keeps its children whole, since its offset applies to them.
fn rows(child: &ArrayData, offset: usize, len: usize) -> Result<ArrayData, ArrowError> {
    if !matches!(child.data_type(), DataType::Struct(_)) {
        return Ok(child.slice(offset, len));
    }
    ArrayDataBuilder::new(child.data_type().clone())
        .len(len)
        .offset(child.offset() + offset)
        .nulls(child.nulls().map(|n| n.slice(offset, len)))
        .child_data(child.child_data().to_vec())
        .build()
}
