//! The sweep both reports share: sort the span events once and walk them, so a report
//! costs O(n log n) in its spans instead of a scan of every span per interval or instant.

/// Walks the positions `[start, end)` in runs over which the level (the sum of every
/// delta at or before a position) and the licensed count are both constant, and calls
/// `run(from, to, level, licensed)` for each run, in order. The runs tile the range.
///
/// `events` are `(position, delta)` pairs in any order; each negative delta lies at or
/// after its positive one (a span ends after it starts), so the level is never below 0.
/// `changes` are the positions where `licensed_at` may change, ascending.
pub(crate) fn runs(
    mut events: Vec<(u64, i64)>,
    changes: impl Iterator<Item = u64>,
    start: u64,
    end: u64,
    licensed_at: impl Fn(u64) -> u64,
    mut run: impl FnMut(u64, u64, u64, u64),
) {
    events.sort_unstable_by_key(|e| e.0);
    let mut changes = changes.filter(|c| *c > start).peekable();
    // i128: no number of u32 counts that fits in memory can overflow it.
    let mut level: i128 = 0;
    let mut i = 0;
    let mut at = start;
    while at < end {
        // Every event at `at` (ends with starts) before the level is read, so a seat
        // returned at the instant another is taken is not counted twice.
        while let Some(&(p, delta)) = events.get(i) {
            if p > at {
                break;
            }
            level += i128::from(delta);
            i += 1;
        }
        while changes.next_if(|c| *c <= at).is_some() {}
        // Strictly after `at` (both were advanced past it), so every turn progresses.
        let next = [events.get(i).map(|e| e.0), changes.peek().copied()]
            .into_iter()
            .flatten()
            .fold(end, u64::min);
        let level_now = u64::try_from(level.max(0)).unwrap_or(u64::MAX);
        run(at, next, level_now, licensed_at(at));
        at = next;
    }
}
