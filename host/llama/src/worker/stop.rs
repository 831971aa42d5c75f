//! Stop strings: finding one in generated text, and how much of a streamed tail
//! must wait because it could still become one.

/// How many trailing bytes of `text` could be the start of a stop string.
pub(crate) fn held_back(text: &[u8], stops: &[String]) -> usize {
    stops
        .iter()
        .map(|stop| {
            let stop = stop.as_bytes();
            (1..stop.len().min(text.len() + 1)).rev().find(|&n| text.ends_with(&stop[..n])).unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

/// Where a stop string begins in `text`, searching only where text added since
/// `new_from` could complete one.
pub(crate) fn find_stop(text: &[u8], new_from: usize, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter_map(|stop| {
            let stop = stop.as_bytes();
            let from = new_from.saturating_sub(stop.len() - 1);
            text[from..].windows(stop.len()).position(|w| w == stop).map(|i| from + i)
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::find_stop;

    #[test]
    fn streaming_holds_back_what_may_become_a_stop_string() {
        use super::held_back;
        let stops = vec!["</s>".to_string()];
        assert_eq!(held_back(b"hello", &stops), 0);
        assert_eq!(held_back(b"hello<", &stops), 1);
        assert_eq!(held_back(b"hello</", &stops), 2);
        assert_eq!(held_back(b"hello</s", &stops), 3);
        assert_eq!(held_back(b"<", &[]), 0);
    }

    #[test]
    fn stop_strings_are_found_across_token_boundaries() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(find_stop(b"abc\n", 3, &stops), None);
        assert_eq!(find_stop(b"abc\n\nxyz", 4, &stops), Some(3));
        assert_eq!(find_stop(b"xxEN", 2, &stops), None);
        assert_eq!(find_stop(b"xxENDyy", 4, &stops), Some(2));
        assert_eq!(find_stop(b"ENDxx", 4, &stops), None, "a stop wholly before new text was already seen");
    }
}
