//! Timeline and function-table queries.

use super::*;

impl ProfileIndex {
    /// Tier weights of the samples `filter` selects, in `buckets` equal buckets over the
    /// selected time range (the whole axis when the filter has none). With a focus, only
    /// samples whose stack contains the focused function count.
    pub fn timeline(&self, filter: &Filter, buckets: usize) -> Result<Timeline, QueryError> {
        let proc = self.process_index(filter)?;
        let axis = filter.axis.unwrap_or(self.default_axis);
        let range = self.range_ns(filter)?;
        let focus = self.focus_mask(filter)?;
        if let Some(tid) = filter.thread {
            let known = match proc {
                Some(p) => self.procs[p].tids.contains(&tid),
                None => self.procs.iter().any(|p| p.tids.contains(&tid)),
            };
            if !known {
                return Err(QueryError::NoThread(tid));
            }
        }
        let end_axis = self.axis_end(axis, proc);
        let (from, to) = match range {
            Some((a, b)) => (a, if b == u64::MAX { end_axis.max(a) } else { b }),
            None => (0, end_axis),
        };
        let buckets = buckets.max(1);
        let span = to.saturating_sub(from).max(1);
        let width = span.div_ceil(buckets as u64).max(1);
        let mut counts = vec![0u64; buckets * TIERS];
        let mask = Self::tier_mask(filter);
        let focus_hit: Option<Vec<bool>> = focus.map(|fm| {
            (0..self.stack_proc.len() as u32)
                .map(|s| self.focus_pos(filter.native, s, &fm).is_some())
                .collect()
        });
        for i in self.sample_range(axis, proc, from, to) {
            let (stack, tier) = (self.s_stack[i], self.s_tier[i] as usize);
            if !mask[tier]
                || proc.is_some_and(|p| self.stack_proc[stack as usize] as usize != p)
                || filter.thread.is_some_and(|t| t != self.s_tid[i])
                || focus_hit.as_ref().is_some_and(|h| !h[stack as usize])
            {
                continue;
            }
            let b = ((self.x(axis, proc, i) - from) / width) as usize;
            counts[b.min(buckets - 1) * TIERS + tier] += self.s_weight[i] as u64;
        }
        Ok(Timeline {
            axis,
            start_s: from as f64 / 1e9,
            bucket_s: width as f64 / 1e9,
            end_s: to as f64 / 1e9,
            counts,
            buckets,
        })
    }

    /// Self and total weight, split by tier, of every function with samples in the
    /// selection, heaviest self first (then total, then name). With a focus, only
    /// samples whose stack contains the focused function count.
    pub fn functions(&self, filter: &Filter) -> Result<Vec<FunctionRow>, QueryError> {
        let focus = self.focus_mask(filter)?;
        let sel = self.select(filter)?;
        let nf = self.functions.len();
        let mut self_t = vec![[0u64; TIERS]; nf];
        let mut total_t = vec![[0u64; TIERS]; nf];
        let mut stamp = vec![u32::MAX; nf];
        for (s, w) in sel.weights.iter().enumerate() {
            if w.iter().all(|&x| x == 0) {
                continue;
            }
            let st = self.stack(filter.native, s as u32);
            if let Some(fm) = &focus {
                if !st.iter().any(|&f| fm[f as usize]) {
                    continue;
                }
            }
            for &f in st {
                if stamp[f as usize] != s as u32 {
                    stamp[f as usize] = s as u32;
                    for k in 0..TIERS {
                        total_t[f as usize][k] += w[k];
                    }
                }
            }
            if let Some(&leaf) = st.last() {
                for k in 0..TIERS {
                    self_t[leaf as usize][k] += w[k];
                }
            }
        }
        let mut rows: Vec<FunctionRow> = (0..nf)
            .filter(|&f| total_t[f].iter().any(|&x| x > 0))
            .map(|f| FunctionRow {
                function: self.functions[f].clone(),
                self_: self_t[f].iter().sum(),
                total: total_t[f].iter().sum(),
                self_tiers: self_t[f],
                total_tiers: total_t[f],
            })
            .collect();
        rows.sort_by(|a, b| {
            b.self_
                .cmp(&a.self_)
                .then(b.total.cmp(&a.total))
                .then_with(|| a.function.name.cmp(&b.function.name))
                .then_with(|| a.function.module.cmp(&b.function.module))
        });
        Ok(rows)
    }
}
