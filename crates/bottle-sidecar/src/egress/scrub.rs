//! Scrubbing responses: every value the proxy injected into a request is
//! replaced by its sentinel in the response's headers, body and trailers, so
//! an upstream that reflects the request (an echo endpoint, `TRACE`, an error
//! page) hands the agent only what the agent already had.
//!
//! A [`Scrubber`] holds the patterns and what replaces each, matched
//! leftmost-longest by one Aho-Corasick automaton. A [`BodyScrub`] runs it
//! over a body chunk by chunk without buffering the body: between chunks it
//! holds back only the end of the data that could still begin a pattern (at
//! most the longest pattern less one byte), and flushes that when the body
//! ends. The result is the same as scrubbing the whole body at once, however
//! the upstream split it.
//!
//! Limits: a compressed body is scrubbed byte by byte like any other, which
//! cannot see a value inside the compression, so the proxy asks for an
//! identity response on requests that carry a credential (see
//! [`super::credentials`]); an upstream that compresses anyway, or encodes a
//! reflected value some other way, is not caught. Upgraded connections
//! (WebSocket) are passed through unscrubbed once the `101` head is.

use aho_corasick::{AhoCorasick, MatchKind};
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};

/// The values to remove from a response and what replaces each. Not
/// `Debug`: the patterns are the credentials themselves.
pub(crate) struct Scrubber {
    automaton: AhoCorasick,
    patterns: Vec<Vec<u8>>,
    replacements: Vec<Bytes>,
    /// The longest pattern's length.
    longest: usize,
    /// Whether every replacement is as long as its pattern, so that a
    /// scrubbed body keeps its length.
    same_length: bool,
}

impl Scrubber {
    /// Replaces each pattern by its replacement; empty patterns are dropped,
    /// and of two equal patterns the first one's replacement is used.
    pub(crate) fn new(pairs: impl IntoIterator<Item = (Vec<u8>, Bytes)>) -> Result<Self, aho_corasick::BuildError> {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut replacements = Vec::new();
        for (pattern, replacement) in pairs {
            if !pattern.is_empty() && !patterns.contains(&pattern) {
                patterns.push(pattern);
                replacements.push(replacement);
            }
        }
        let automaton = AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(&patterns)?;
        let longest = patterns.iter().map(Vec::len).max().unwrap_or(0);
        let same_length = patterns.iter().zip(&replacements).all(|(p, r)| p.len() == r.len());
        Ok(Scrubber { automaton, patterns, replacements, longest, same_length })
    }

    /// `text` with every pattern replaced, or `None` when it holds none.
    pub(crate) fn replace(&self, text: &[u8]) -> Option<Vec<u8>> {
        let mut matches = self.automaton.find_iter(text).peekable();
        matches.peek()?;
        let mut out = Vec::with_capacity(text.len());
        let mut last = 0;
        for found in matches {
            out.extend_from_slice(&text[last..found.start()]);
            out.extend_from_slice(&self.replacements[found.pattern().as_usize()]);
            last = found.end();
        }
        out.extend_from_slice(&text[last..]);
        Some(out)
    }

    /// Scrubs every value of `headers` in place.
    pub(crate) fn scrub_headers(&self, headers: &mut HeaderMap) {
        for value in headers.values_mut() {
            if let Some(clean) = self.replace(value.as_bytes()) {
                // The replacements are sentinels (visible ASCII) and the rest was a valid value.
                *value = HeaderValue::from_bytes(&clean).unwrap_or(HeaderValue::from_static("bot-bottle-hidden"));
            }
        }
    }

    /// Scrubs a response head whose body will go through a [`BodyScrub`]:
    /// its headers, and its `Content-Length` dropped when scrubbing can
    /// change the body's length (hyper then streams the body).
    pub(crate) fn scrub_head(&self, headers: &mut HeaderMap) {
        self.scrub_headers(headers);
        if !self.same_length {
            headers.remove(header::CONTENT_LENGTH);
        }
    }

    /// How many bytes at the end of `data` must wait for the next chunk: the
    /// longest end of `data` that is the start (and not the whole) of a pattern.
    fn undecided(&self, data: &[u8]) -> usize {
        let most = self.longest.saturating_sub(1).min(data.len());
        (1..=most)
            .rev()
            .find(|&n| {
                let tail = &data[data.len() - n..];
                self.patterns.iter().any(|p| p.len() > n && p[0] == tail[0] && p.starts_with(tail))
            })
            .unwrap_or(0)
    }
}

/// One body being scrubbed, chunk by chunk.
pub(crate) struct BodyScrub {
    scrubber: std::sync::Arc<Scrubber>,
    /// The end of the data seen so far that could begin a pattern.
    held: Vec<u8>,
}

impl BodyScrub {
    pub(crate) fn new(scrubber: std::sync::Arc<Scrubber>) -> Self {
        BodyScrub { scrubber, held: Vec::new() }
    }

    pub(crate) fn scrubber(&self) -> &Scrubber {
        &self.scrubber
    }

    /// The next chunk, scrubbed as far as it can be decided now.
    pub(crate) fn feed(&mut self, chunk: Bytes) -> Bytes {
        let data = if self.held.is_empty() {
            chunk
        } else {
            let mut joined = std::mem::take(&mut self.held);
            joined.extend_from_slice(&chunk);
            Bytes::from(joined)
        };
        self.scan(data, false)
    }

    /// What was held back, scrubbed, once the body has ended.
    pub(crate) fn finish(&mut self) -> Bytes {
        let held = Bytes::from(std::mem::take(&mut self.held));
        self.scan(held, true)
    }

    /// Scrubs `data`, keeping back (unless `end`) the bytes from which a
    /// pattern could still start but cannot be decided yet.
    ///
    /// A match is final when it starts before the undecided end: every
    /// longer pattern starting there would have to run past `data`, and then
    /// its beginning would be a longer undecided end. Zero-copy when nothing matches.
    fn scan(&mut self, data: Bytes, end: bool) -> Bytes {
        let scrubber = &*self.scrubber;
        let decided = if end { data.len() } else { data.len() - scrubber.undecided(&data) };
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut at = 0;
        for found in scrubber.automaton.find_iter(&data[..]) {
            if found.start() >= decided {
                break;
            }
            pieces.push(data.slice(at..found.start()));
            pieces.push(scrubber.replacements[found.pattern().as_usize()].clone());
            at = found.end();
        }
        let cut = at.max(decided);
        self.held.extend_from_slice(&data[cut..]);
        if pieces.is_empty() {
            return data.slice(..cut);
        }
        pieces.push(data.slice(at..cut));
        let mut out = Vec::with_capacity(pieces.iter().map(Bytes::len).sum());
        for piece in &pieces {
            out.extend_from_slice(piece);
        }
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    fn scrubber(pairs: &[(&str, &str)]) -> Arc<Scrubber> {
        let pairs = pairs.iter().map(|(p, r)| (p.as_bytes().to_vec(), Bytes::from(r.to_string())));
        Arc::new(Scrubber::new(pairs).expect("automaton"))
    }

    /// The whole-buffer reference: at each position the longest pattern
    /// starting there is replaced, else the byte is kept.
    fn reference(pairs: &[(String, String)], text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < text.len() {
            let best = pairs
                .iter()
                .filter(|(p, _)| !p.is_empty() && text[at..].starts_with(p.as_bytes()))
                .max_by_key(|(p, _)| p.len());
            match best {
                Some((pattern, replacement)) => {
                    out.extend_from_slice(replacement.as_bytes());
                    at += pattern.len();
                }
                None => {
                    out.push(text[at]);
                    at += 1;
                }
            }
        }
        out
    }

    /// `text` fed in pieces cut at `cuts`, then flushed; also how much was ever held back.
    fn streamed(scrubber: &Arc<Scrubber>, text: &[u8], cuts: &[usize]) -> (Vec<u8>, usize) {
        let mut scrub = BodyScrub::new(Arc::clone(scrubber));
        let mut out = Vec::new();
        let mut held_most = 0;
        let mut from = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(text.len())).collect();
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain([text.len()]) {
            out.extend_from_slice(&scrub.feed(Bytes::copy_from_slice(&text[from..cut])));
            held_most = held_most.max(scrub.held.len());
            from = cut;
        }
        out.extend_from_slice(&scrub.finish());
        (out, held_most)
    }

    #[test]
    fn a_value_split_across_chunks_is_replaced() {
        let s = scrubber(&[("tok-123", "S"), ("Bearer tok-123", "S")]);
        let text = b"{\"authorization\": \"Bearer tok-123\", \"again\": \"tok-123\"}";
        for cut in 0..text.len() {
            let (out, held) = streamed(&s, text, &[cut]);
            assert_eq!(out, b"{\"authorization\": \"S\", \"again\": \"S\"}", "cut at {cut}");
            assert!(held < "Bearer tok-123".len(), "held {held}");
        }
        let (out, _) = streamed(&s, text, &(0..text.len()).collect::<Vec<_>>());
        assert_eq!(out, b"{\"authorization\": \"S\", \"again\": \"S\"}", "one byte at a time");
    }

    #[test]
    fn nothing_is_held_that_cannot_begin_a_pattern() {
        let s = scrubber(&[("secret", "S")]);
        let mut scrub = BodyScrub::new(Arc::clone(&s));
        assert_eq!(&scrub.feed(Bytes::from_static(b"data: event\n\n"))[..], b"data: event\n\n");
        assert!(scrub.held.is_empty(), "a streamed event is passed on whole");
        assert_eq!(&scrub.feed(Bytes::from_static(b"x sec"))[..], b"x ");
        assert_eq!(scrub.held, b"sec");
        assert_eq!(&scrub.feed(Bytes::from_static(b"ond"))[..], b"second");
        assert_eq!(&scrub.feed(Bytes::from_static(b"secre"))[..], b"");
        assert_eq!(&scrub.finish()[..], b"secre", "the end of the body flushes what was held");
    }

    #[test]
    fn heads_lose_the_values_and_a_length_that_would_be_wrong() {
        let s = scrubber(&[("tok", "bot-bottle-hidden:T")]);
        let mut headers = HeaderMap::new();
        headers.insert("x-echo", HeaderValue::from_static("Bearer tok, tok"));
        headers.insert("content-length", HeaderValue::from_static("42"));
        s.scrub_head(&mut headers);
        assert_eq!(headers["x-echo"], "Bearer bot-bottle-hidden:T, bot-bottle-hidden:T");
        assert!(!headers.contains_key("content-length"));
        assert!(!s.same_length);
        let same = scrubber(&[("abc", "xyz")]);
        let mut headers = HeaderMap::new();
        headers.insert("content-length", HeaderValue::from_static("42"));
        same.scrub_head(&mut headers);
        assert!(same.same_length && headers.contains_key("content-length"));
    }

    proptest! {
        #[test]
        fn streaming_equals_scrubbing_the_whole_body(
            patterns in prop::collection::vec(("[ab]{1,6}", "[XY]{0,3}"), 1..4),
            text in "[abc]{0,80}",
            cuts in prop::collection::vec(0usize..90, 0..12),
        ) {
            let pairs: Vec<(String, String)> = {
                let mut seen = Vec::new();
                for (p, r) in patterns {
                    if !seen.iter().any(|(q, _): &(String, String)| *q == p) {
                        seen.push((p, r));
                    }
                }
                seen
            };
            let s = Arc::new(Scrubber::new(pairs.iter().map(|(p, r)| (p.clone().into_bytes(), Bytes::from(r.clone()))))
                .expect("automaton"));
            let (out, held) = streamed(&s, text.as_bytes(), &cuts);
            let expect = reference(&pairs, text.as_bytes());
            prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expect));
            prop_assert!(held < s.longest.max(1), "held {} bytes, longest pattern {}", held, s.longest);
            prop_assert_eq!(s.replace(text.as_bytes()).unwrap_or_else(|| text.clone().into_bytes()), expect);
        }
    }
}
