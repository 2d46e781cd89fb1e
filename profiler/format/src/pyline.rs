//! CPython 3.11+ location tables (`co_linetable`, described in CPython's
//! Objects/locations.md): instruction index -> line number. Shared by the agent (which
//! records one instruction per line, keeping stacks small) and the analysis.

/// (instruction index where the entry starts, its length in code units, line or None).
fn entries(table: &[u8], firstlineno: u32) -> impl Iterator<Item = (u32, u32, Option<u32>)> + '_ {
    let mut i = 0usize;
    let mut line = firstlineno as i64;
    let mut addr = 0u32;
    let varint = move |i: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = *table.get(*i)?;
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
    let svarint = move |i: &mut usize| -> Option<i64> {
        let v = varint(i)?;
        Some(if v & 1 == 1 {
            -((v >> 1) as i64)
        } else {
            (v >> 1) as i64
        })
    };
    std::iter::from_fn(move || {
        let head = *table.get(i)?;
        i += 1;
        if head & 0x80 == 0 {
            return None; // not at an entry start: corrupt table
        }
        let code = (head >> 3) & 0x0f;
        let len = (head & 7) as u32 + 1;
        let here = match code {
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
        let start = addr;
        addr = addr.saturating_add(len);
        Some((
            start,
            len,
            here.and_then(|l| u32::try_from(l).ok()).filter(|&l| l > 0),
        ))
    })
}

/// The line of the instruction at index `offset`, if the table says.
pub fn line_for(table: &[u8], firstlineno: u32, offset: u32) -> Option<u32> {
    entries(table, firstlineno)
        .find(|&(start, len, _)| offset < start + len)
        .and_then(|e| e.2)
}

/// The first instruction index on the same line as `offset` (or `offset` itself when the
/// line is unknown): every sample on one line then names the same stack frame.
pub fn line_start(table: &[u8], firstlineno: u32, offset: u32) -> u32 {
    match line_for(table, firstlineno, offset) {
        Some(line) => entries(table, firstlineno)
            .find(|e| e.2 == Some(line))
            .map(|e| e.0)
            .unwrap_or(offset),
        None => offset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_short_one_line_long_and_none_forms() {
        // firstlineno 10: short form (line 10, 2 units), one-line form +1 (line 11, 1 unit),
        // no-column form +2 (line 13, 3 units), no location (1 unit), long form -3 (line 10).
        let t = [
            0x80 | 1,
            0x00,
            0x80 | (11 << 3),
            1,
            2,
            0x80 | (13 << 3) | 2,
            4,
            0x80 | (15 << 3),
            0x80 | (14 << 3),
            7,
            0,
            1,
            1,
        ];
        assert_eq!(line_for(&t, 10, 0), Some(10));
        assert_eq!(line_for(&t, 10, 1), Some(10));
        assert_eq!(line_for(&t, 10, 2), Some(11));
        assert_eq!(line_for(&t, 10, 5), Some(13));
        assert_eq!(line_for(&t, 10, 6), None);
        assert_eq!(line_for(&t, 10, 7), Some(10));
        assert_eq!(line_for(&t, 10, 8), None);
        assert_eq!(line_start(&t, 10, 7), 0);
        assert_eq!(line_start(&t, 10, 4), 3);
    }

    #[test]
    fn garbage_never_panics() {
        for seed in 0..2000u32 {
            let t: Vec<u8> = (0..40)
                .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 97) >> 7) as u8)
                .collect();
            let _ = line_for(&t, seed, seed % 50);
            let _ = line_start(&t, seed, seed % 50);
        }
    }
}
