//! Which samples a [`Filter`] selects.

use super::*;

impl ProfileIndex {
    pub(super) fn stack(&self, mode: NativeMode, s: u32) -> &[u32] {
        self.view(mode).stack(s)
    }

    pub(super) fn process_index(&self, f: &Filter) -> Result<Option<usize>, QueryError> {
        let Some(pid) = f.process else {
            return Ok(None);
        };
        match self.procs.iter().position(|p| p.pid == pid) {
            Some(i) => Ok(Some(i)),
            None => Err(QueryError::NoProcess(pid)),
        }
    }

    /// Range on the axis in ns, validated.
    pub(super) fn range_ns(&self, f: &Filter) -> Result<Option<(u64, u64)>, QueryError> {
        if f.from_s.is_none() && f.to_s.is_none() {
            return Ok(None);
        }
        let conv = |s: f64, what: &str| -> Result<u64, QueryError> {
            if !s.is_finite() || s < 0.0 {
                return Err(QueryError::BadRange(format!(
                    "{what} must be a number of seconds >= 0"
                )));
            }
            Ok((s * 1e9).min(u64::MAX as f64) as u64)
        };
        let from = f.from_s.map(|s| conv(s, "from")).transpose()?.unwrap_or(0);
        let to = f
            .to_s
            .map(|s| conv(s, "to"))
            .transpose()?
            .unwrap_or(u64::MAX);
        if to < from {
            return Err(QueryError::BadRange("to is before from".into()));
        }
        Ok(Some((from, to)))
    }

    pub(super) fn tier_mask(f: &Filter) -> [bool; TIERS] {
        match &f.tiers {
            None => [true; TIERS],
            Some(ts) => {
                let mut m = [false; TIERS];
                for &t in ts {
                    m[tier_index(t)] = true;
                }
                m
            }
        }
    }

    /// Functions named `focus`, as a mask over all functions.
    pub(super) fn focus_mask(&self, f: &Filter) -> Result<Option<Vec<bool>>, QueryError> {
        let Some(name) = &f.focus else {
            return Ok(None);
        };
        let ids = self
            .by_name
            .get(name)
            .ok_or_else(|| QueryError::NoFunction(name.clone()))?;
        let mut m = vec![false; self.functions.len()];
        for &i in ids {
            m[i as usize] = true;
        }
        Ok(Some(m))
    }

    /// Axis value of sample `i` (the selected process's own CPU clock when `proc` is set).
    pub(super) fn x(&self, axis: Axis, proc: Option<usize>, i: usize) -> u64 {
        match (axis, proc) {
            (Axis::Wall, _) => self.s_wall[i],
            (Axis::Cpu, Some(_)) => self.s_cpu_proc[i],
            (Axis::Cpu, None) => self.s_cpu_all[i],
        }
    }

    pub(super) fn axis_end(&self, axis: Axis, proc: Option<usize>) -> u64 {
        match (axis, proc) {
            (Axis::Wall, _) => self.end_wall,
            (Axis::Cpu, Some(p)) => self.end_cpu_proc[p],
            (Axis::Cpu, None) => self.end_cpu_all,
        }
    }

    /// Indices of the samples of the selection whose axis value is in [from, to).
    pub(super) fn sample_range(
        &self,
        axis: Axis,
        proc: Option<usize>,
        from: u64,
        to: u64,
    ) -> SampleIter<'_> {
        match proc {
            Some(p) => {
                let list = &self.procs[p].samples;
                let a = list.partition_point(|&i| self.x(axis, proc, i as usize) < from);
                let b = list.partition_point(|&i| self.x(axis, proc, i as usize) < to);
                SampleIter::Slice(list[a..b.max(a)].iter())
            }
            None => {
                let n = self.s_stack.len();
                let key = |i: usize| self.x(axis, None, i);
                let a = partition(n, |i| key(i) < from);
                let b = partition(n, |i| key(i) < to);
                SampleIter::Range(a..b.max(a))
            }
        }
    }

    /// Per-stack tier weights of the samples `f` selects (focus not applied).
    pub(super) fn select(&self, f: &Filter) -> Result<Selection, QueryError> {
        let proc = self.process_index(f)?;
        if let Some(tid) = f.thread {
            let known = match proc {
                Some(p) => self.procs[p].tids.contains(&tid),
                None => self.procs.iter().any(|p| p.tids.contains(&tid)),
            };
            if !known {
                return Err(QueryError::NoThread(tid));
            }
        }
        let mask = Self::tier_mask(f);
        let axis = f.axis.unwrap_or(self.default_axis);
        let mut weights = vec![[0u64; TIERS]; self.stack_proc.len()];
        let keep = |stack: u32, tid: u32, tier: u8| {
            mask[tier as usize]
                && proc.is_none_or(|p| self.stack_proc[stack as usize] as usize == p)
                && f.thread.is_none_or(|t| t == tid)
        };
        let marked = f
            .markers
            .as_ref()
            .map(|m| self.marker_mask(m))
            .transpose()?;
        if let Some(mask) = &marked {
            // Inside the selected markers: sample by sample (their times matter).
            let (from, to) = self.range_ns(f)?.unwrap_or((0, u64::MAX));
            for i in self.sample_range(axis, proc, from, to) {
                let (stack, tier, tid) = (self.s_stack[i], self.s_tier[i], self.s_tid[i]);
                let p = self.stack_proc[stack as usize];
                if keep(stack, tid, tier) && mask.contains(p, tid, self.s_wall[i]) {
                    weights[stack as usize][tier as usize] += self.s_weight[i] as u64;
                }
            }
            return Ok(Selection { weights });
        }
        match self.range_ns(f)? {
            None => {
                for g in &self.groups {
                    if keep(g.stack, g.tid, g.tier) {
                        weights[g.stack as usize][g.tier as usize] += g.weight;
                    }
                }
            }
            Some((from, to)) => {
                for i in self.sample_range(axis, proc, from, to) {
                    let (stack, tier) = (self.s_stack[i], self.s_tier[i]);
                    if keep(stack, self.s_tid[i], tier) {
                        weights[stack as usize][tier as usize] += self.s_weight[i] as u64;
                    }
                }
            }
        }
        Ok(Selection { weights })
    }

    /// Outermost position of a focused function in stack `s`.
    pub(super) fn focus_pos(&self, mode: NativeMode, s: u32, focus: &[bool]) -> Option<usize> {
        self.stack(mode, s).iter().position(|&f| focus[f as usize])
    }
}

/// Sample indices: a process's list, or a range of all samples.
pub(super) enum SampleIter<'a> {
    Slice(std::slice::Iter<'a, u32>),
    Range(std::ops::Range<usize>),
}

impl Iterator for SampleIter<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        match self {
            SampleIter::Slice(it) => it.next().map(|&i| i as usize),
            SampleIter::Range(r) => r.next(),
        }
    }
}

fn partition(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}
