//! Running independent per-cluster work on every core with scoped threads, results in input
//! order. Threads are computation, not I/O: the core stays pure.

/// Applies `f` to every item of `items` in parallel chunks and returns the results in order,
/// or the first error (in item order).
///
/// # Errors
/// The first error `f` returned.
pub fn try_map<T: Sync, R: Send, E: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len().max(1));
    let chunk = items.len().div_ceil(threads).max(1);
    let f = &f;
    let parts: Vec<Result<Vec<R>, E>> = std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut out = Vec::with_capacity(items.len());
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order_and_reports_the_first_error() {
        let items: Vec<u32> = (0..1000).collect();
        let doubled: Result<Vec<u32>, ()> = super::try_map(&items, |i| Ok(i * 2));
        assert_eq!(
            doubled.unwrap(),
            items.iter().map(|i| i * 2).collect::<Vec<_>>()
        );
        let failed = super::try_map(&items, |i| if *i >= 700 { Err(*i) } else { Ok(*i) });
        assert_eq!(failed, Err(700));
        let empty: Result<Vec<u32>, ()> = super::try_map(&[] as &[u32], |i| Ok(*i));
        assert!(empty.unwrap().is_empty());
    }
}
