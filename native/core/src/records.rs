//! Records left where they are: a `RecordSet`'s byte ranges (feedkit/format.py) over the
//! buffers that hold them, checked once so that every later read is in bounds.

use crate::error::{Error, Result};

/// Record `i` is `sources[source[i]][starts[i]..starts[i] + lengths[i]]` (source 0 for
/// every record when `source` is None).
#[derive(Debug, Clone)]
pub struct Records<'a> {
    sources: Vec<&'a [u8]>,
    source: Option<&'a [u8]>,
    starts: &'a [i64],
    lengths: &'a [i64],
}

impl<'a> Records<'a> {
    /// Checks that the arrays agree and every record lies inside its source.
    pub fn new(
        sources: Vec<&'a [u8]>,
        source: Option<&'a [u8]>,
        starts: &'a [i64],
        lengths: &'a [i64],
    ) -> Result<Records<'a>> {
        let n = starts.len();
        if lengths.len() != n || source.is_some_and(|s| s.len() != n) {
            return Err(Error::damaged(format!(
                "{n} record starts, {} lengths and {} sources",
                lengths.len(),
                source.map_or(n, <[u8]>::len)
            )));
        }
        if sources.is_empty() && n > 0 {
            return Err(Error::damaged("records without a source"));
        }
        for i in 0..n {
            let s = source.map_or(0, |s| s[i] as usize);
            let (a, len) = (starts[i], lengths[i]);
            let fits = sources.get(s).is_some_and(|src| {
                a >= 0 && len >= 0 && a.checked_add(len).is_some_and(|end| end as u64 <= src.len() as u64)
            });
            if !fits {
                return Err(Error::damaged(format!(
                    "record {i} ([{a}, +{len}) of source {s}) lies outside its source"
                )));
            }
        }
        Ok(Records { sources, source, starts, lengths })
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The length of record `i`.
    #[inline(always)]
    pub fn length(&self, i: usize) -> usize {
        self.lengths[i] as usize
    }

    /// The bytes of record `i` (checked in bounds by `new`; indexing checks again).
    #[inline(always)]
    pub fn get(&self, i: usize) -> &'a [u8] {
        let s = self.source.map_or(0, |s| s[i] as usize);
        let a = self.starts[i] as usize;
        &self.sources[s][a..a + self.lengths[i] as usize]
    }

    /// The records `order` names, in that order (each index `< len()`).
    pub fn select(&self, order: &[u32]) -> Selection<'a> {
        Selection {
            sources: self.sources.clone(),
            source: self.source.map(|s| order.iter().map(|&i| s[i as usize]).collect()),
            starts: order.iter().map(|&i| self.starts[i as usize]).collect(),
            lengths: order.iter().map(|&i| self.lengths[i as usize]).collect(),
        }
    }
}

/// Records of another [`Records`] in another order ([`Records::select`]).
#[derive(Debug, Clone)]
pub struct Selection<'a> {
    sources: Vec<&'a [u8]>,
    source: Option<Vec<u8>>,
    starts: Vec<i64>,
    lengths: Vec<i64>,
}

impl Selection<'_> {
    pub fn records(&self) -> Records<'_> {
        // Every range was checked by the `Records` it was selected from.
        Records { sources: self.sources.clone(), source: self.source.as_deref(), starts: &self.starts, lengths: &self.lengths }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_from_their_sources() {
        let (a, b): (&[u8], &[u8]) = (b"hello", b"XY");
        let r = Records::new(vec![a, b], Some(&[0, 1, 0]), &[1, 0, 0], &[3, 2, 0]).unwrap();
        assert_eq!((r.get(0), r.get(1), r.get(2)), (&b"ell"[..], &b"XY"[..], &b""[..]));
        assert_eq!(r.length(1), 2);
        let one = Records::new(vec![a], None, &[4], &[1]).unwrap();
        assert_eq!(one.get(0), b"o");
    }

    #[test]
    fn records_outside_their_source_are_refused() {
        let a: &[u8] = b"hello";
        assert!(Records::new(vec![a], None, &[4], &[2]).is_err());
        assert!(Records::new(vec![a], None, &[-1], &[1]).is_err());
        assert!(Records::new(vec![a], None, &[0], &[-1]).is_err());
        assert!(Records::new(vec![a], None, &[i64::MAX], &[i64::MAX]).is_err());
        assert!(Records::new(vec![a], Some(&[1]), &[0], &[1]).is_err());
        assert!(Records::new(vec![a], None, &[0, 1], &[1]).is_err());
        assert!(Records::new(vec![], None, &[0], &[0]).is_err());
        assert!(Records::new(vec![], None, &[], &[]).is_ok());
    }
}
