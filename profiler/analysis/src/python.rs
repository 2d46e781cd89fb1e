//! Python frames: line numbers from CPython's location table, and hiding the interpreter's
//! own C frames between Python frames.

use prof_format::PyCode;

use crate::symbolize::Frame;

/// Module name given to Python frames whose file is unknown.
pub const PYTHON_MODULE: &str = "[python]";

/// The frame of a Python code object at instruction index `offset`.
pub fn frame(code: Option<&PyCode>, offset: u32) -> Frame {
    let Some(c) = code else {
        return Frame::bare("<unknown python code>", PYTHON_MODULE);
    };
    let module = match c.filename.rsplit('/').next() {
        Some(base) if !base.is_empty() => base.to_string(),
        _ => PYTHON_MODULE.to_string(),
    };
    let line = line_for(c, offset).or((c.firstlineno > 0).then_some(c.firstlineno));
    Frame {
        name: c.qualname.clone(),
        module,
        file: (!c.filename.is_empty()).then(|| c.filename.clone()),
        line,
        inlined: false,
    }
}

/// Decodes the 3.11+ location table (`Objects/locations.md` in CPython) up to the entry
/// covering instruction index `offset`. None for an entry with no location.
pub fn line_for(c: &PyCode, offset: u32) -> Option<u32> {
    if c.python_minor < 11 {
        return None;
    }
    let t = &c.linetable;
    let mut i = 0usize;
    let mut line = c.firstlineno as i64;
    let mut addr = 0u32;
    let varint = |i: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = *t.get(*i)?;
            *i += 1;
            v |= ((b & 0x3f) as u64) << shift;
            if b & 0x40 == 0 {
                return Some(v);
            }
            shift += 6;
            if shift > 60 {
                return None;
            }
        }
    };
    let svarint = |i: &mut usize| -> Option<i64> {
        let v = varint(i)?;
        Some(if v & 1 == 1 {
            -((v >> 1) as i64)
        } else {
            (v >> 1) as i64
        })
    };
    while i < t.len() {
        let head = t[i];
        i += 1;
        if head & 0x80 == 0 {
            return None; // not at an entry start: corrupt table
        }
        let code = (head >> 3) & 0x0f;
        let len = (head & 7) as u32 + 1;
        let here: Option<i64> = match code {
            15 => None,
            14 => {
                line += svarint(&mut i)?;
                varint(&mut i)?; // end line delta
                varint(&mut i)?; // column + 1
                varint(&mut i)?; // end column + 1
                Some(line)
            }
            13 => {
                line += svarint(&mut i)?;
                Some(line)
            }
            10..=12 => {
                line += (code - 10) as i64;
                i += 2;
                Some(line)
            }
            _ => {
                i += 1;
                Some(line)
            }
        };
        if offset < addr + len {
            return here.and_then(|l| u32::try_from(l).ok()).filter(|&l| l > 0);
        }
        addr += len;
    }
    None
}

/// Is this the C function that evaluates Python frames (replaced by them)?
pub fn is_eval_frame(f: &Frame) -> bool {
    matches!(
        f.name.as_str(),
        "_PyEval_EvalFrameDefault" | "_PyEval_EvalFrame" | "PyEval_EvalFrameEx"
    )
}
