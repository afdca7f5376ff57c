//! A position index for YAML text: node path (mapping keys and sequence
//! indices) to the 1-based line and column of the node's key and value,
//! built from yaml-rust2's marked event stream.
//!
//! It also records duplicate mapping keys and where a second document starts,
//! so those `serde_yaml` errors can point at the right place.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One step of a node path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Seg {
    /// A mapping key (its text as written).
    Key(String),
    /// A sequence index (0-based).
    Index(usize),
}

/// A 1-based position in the text, in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pos {
    pub(super) line: usize,
    pub(super) column: usize,
}

impl Pos {
    /// The start of the text.
    pub(super) const START: Pos = Pos { line: 1, column: 1 };

    /// yaml-rust2 markers have 1-based lines and 0-based columns (a test
    /// pins this down).
    fn from_marker(mark: Marker) -> Pos {
        Pos { line: mark.line(), column: mark.col() + 1 }
    }
}

/// Where a node is.
#[derive(Debug, Clone)]
struct Span {
    /// The key, for a mapping value.
    key: Option<Pos>,
    /// The value.
    value: Pos,
    /// The character index of `value`, to order nodes.
    index: usize,
    /// The scalar's text as written (without quotes), for scalar nodes.
    scalar: Option<String>,
}

/// A key that appears twice in one mapping.
#[derive(Debug, Clone)]
pub(super) struct Duplicate {
    /// The mapping's path.
    pub(super) parent: Vec<Seg>,
    /// The key.
    pub(super) key: String,
    /// Its first occurrence.
    pub(super) first: Pos,
    /// Its repetition.
    pub(super) second: Pos,
}

/// The position index of one YAML text.
#[derive(Debug, Default)]
pub(super) struct Spans {
    nodes: HashMap<Vec<Seg>, Span>,
    /// Duplicate keys, in text order.
    pub(super) duplicates: Vec<Duplicate>,
    /// Where a second document starts, if there is one.
    pub(super) second_document: Option<Pos>,
}

impl Spans {
    /// Indexes `text`. Parse errors stop the index where they occur: nodes
    /// after them are missing, and lookups fall back to an ancestor.
    pub(super) fn index(text: &str) -> Spans {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        // Driven event by event rather than through `Parser::load`, which
        // recurses once per nesting level.
        while !builder.done {
            match parser.next_token() {
                Ok((Event::StreamEnd, _)) | Err(_) => break,
                Ok((event, mark)) => builder.on_event(event, mark),
            }
        }
        builder.spans
    }

    /// The position of the node at `path`, or of its nearest indexed ancestor.
    pub(super) fn value(&self, path: &[Seg]) -> Pos {
        (0..=path.len()).rev().find_map(|len| self.nodes.get(&path[..len]).map(|span| span.value)).unwrap_or(Pos::START)
    }

    /// The position of the key of the node at `path` (its value when it has no
    /// key, e.g. a sequence item), or of its nearest indexed ancestor.
    pub(super) fn key(&self, path: &[Seg]) -> Pos {
        match self.nodes.get(path) {
            Some(span) => span.key.unwrap_or(span.value),
            None => self.value(path),
        }
    }

    /// The text of the scalar at `path` as written, if indexed.
    pub(super) fn scalar(&self, path: &[Seg]) -> Option<&str> {
        self.nodes.get(path).and_then(|span| span.scalar.as_deref())
    }
}

/// What an open mapping expects next.
#[derive(Debug)]
enum MapState {
    Key,
    /// Inside a key that is itself a collection.
    InKey(String, Marker),
    Value(String, Marker),
}

#[derive(Debug)]
enum Frame {
    Map { path: Vec<Seg>, state: MapState, seen: HashMap<String, Pos>, first_key: bool },
    Seq { path: Vec<Seg>, next: usize },
}

#[derive(Debug, Default)]
struct Builder {
    spans: Spans,
    stack: Vec<Frame>,
    documents: usize,
    done: bool,
}

/// The path under which a collection used as a mapping key is indexed;
/// never equal to a real key's text.
const COMPLEX_KEY: &str = "\u{0}complex key";

impl Builder {
    /// A node starts at `mark`: works out its path, records it, and returns the path.
    fn start(&mut self, mark: Marker, scalar: Option<&str>, empty_plain: bool) -> Vec<Seg> {
        let pos = Pos::from_marker(mark);
        let (path, key) = match self.stack.last_mut() {
            None => (Vec::new(), None),
            Some(Frame::Seq { path, next }) => {
                let mut path = path.clone();
                path.push(Seg::Index(*next));
                (path, None)
            }
            Some(Frame::Map { path, state, seen, first_key }) => match state {
                // `InKey` only while the key's own collection is open on top
                // of this frame; seeing it here means a broken stream: a new key.
                MapState::Key | MapState::InKey(..) => {
                    let text = scalar.unwrap_or(COMPLEX_KEY).to_string();
                    if let Some(first) = seen.get(&text) {
                        self.spans.duplicates.push(Duplicate {
                            parent: path.clone(),
                            key: text.clone(),
                            first: *first,
                            second: pos,
                        });
                    } else {
                        seen.insert(text.clone(), pos);
                    }
                    // A block mapping's start marker is not where its first
                    // key is: the mapping starts at whichever comes first.
                    if std::mem::take(first_key)
                        && let Some(span) = self.spans.nodes.get_mut(path.as_slice())
                        && mark.index() < span.index
                    {
                        span.value = pos;
                        span.index = mark.index();
                    }
                    let mut key_path = path.clone();
                    key_path.push(Seg::Key(COMPLEX_KEY.to_string()));
                    *state = MapState::InKey(text, mark);
                    // Keys are not indexed as nodes (only collections used as keys
                    // get a path, under which nothing is ever looked up).
                    return key_path;
                }
                MapState::Value(text, key_mark) => {
                    let mut path = path.clone();
                    path.push(Seg::Key(text.clone()));
                    (path, Some(Pos::from_marker(*key_mark)))
                }
            },
        };
        // An empty value (`key:` and nothing) is marked where the next token
        // starts, often on another line: point at its key instead.
        let pos = match (key, scalar) {
            (Some(key), Some("")) if empty_plain => key,
            _ => pos,
        };
        let span = Span { key, value: pos, index: mark.index(), scalar: scalar.map(str::to_string) };
        // An index built from a broken stream may revisit a path; keep the first.
        self.spans.nodes.entry(path.clone()).or_insert(span);
        path
    }

    /// The node most recently started in the innermost open collection ended.
    fn complete(&mut self) {
        match self.stack.last_mut() {
            None => {}
            Some(Frame::Seq { next, .. }) => *next += 1,
            Some(Frame::Map { state, .. }) => {
                *state = match std::mem::replace(state, MapState::Key) {
                    MapState::InKey(text, mark) => MapState::Value(text, mark),
                    MapState::Key | MapState::Value(..) => MapState::Key,
                };
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents == 2 {
                    self.spans.second_document = Some(Pos::from_marker(mark));
                    self.done = true;
                }
            }
            Event::Scalar(text, style, ..) => {
                let empty_plain = style == TScalarStyle::Plain && text.is_empty();
                self.start(mark, Some(&text), empty_plain);
                self.complete();
            }
            Event::Alias(_) => {
                self.start(mark, None, false);
                self.complete();
            }
            Event::MappingStart(..) => {
                let path = self.start(mark, None, false);
                self.stack.push(Frame::Map { path, state: MapState::Key, seen: HashMap::new(), first_key: true });
            }
            Event::SequenceStart(..) => {
                let path = self.start(mark, None, false);
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.complete();
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}
