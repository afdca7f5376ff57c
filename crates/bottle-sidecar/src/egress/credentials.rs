//! The routes' credentials: how a request carries one and how its response
//! gives none back.
//!
//! On a request the proxy lets through, for the route's own credential each
//! of its sentinels is swapped for the real value wherever the agent put it:
//! in any header value, inside a `Basic` pair the client built
//! (`base64(user:<sentinel>)`, as git over HTTPS and `gh` send it: decoded,
//! swapped, encoded again) and in a query parameter (matched
//! percent-decoded, the value percent-encoded in its place). The route's
//! configured header is then set, replacing whatever the agent sent there.
//! Every other sentinel (another route's, or any on a route without a
//! credential) takes its header or query parameter with it. A sentinel is a
//! whole placeholder: `bot-bottle-hidden:GH` inside `bot-bottle-hidden:GH_X`
//! is no sentinel of `GH`, and that value is removed.
//!
//! Requests carrying a credential lose `Accept-Encoding`, so that the
//! upstream answers uncompressed and the response [`Scrubber`] can see every
//! reflected value. It replaces each injected value — the credential itself,
//! the full header value, the base64 of a `Basic` pair (the route's and any
//! the client built), the percent-encoded credential — by the route's first
//! sentinel (`bot-bottle-hidden:<source>` when it has none).

use std::ops::Range;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bottle_core::sidecar::{EgressConfig, InjectedHeader};
use hyper::Uri;
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;

use super::EgressError;
use super::scrub::Scrubber;

/// Standard base64, padded or not (clients differ in what they send).
const BASIC: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One route's credential, ready to inject.
struct Credential {
    header: HeaderName,
    /// The full header value, marked sensitive.
    value: HeaderValue,
    /// The credential itself: what the route's sentinels are swapped for.
    real: Vec<u8>,
    /// What replaces an injected value in a response.
    sentinel: Bytes,
    /// The scrubber for the values every request on the route carries.
    scrubber: Arc<Scrubber>,
}

/// Every route's credential and every sentinel the proxy knows.
pub(crate) struct Credentials {
    routes: Vec<Option<Credential>>,
    /// Every sentinel, leftmost-longest.
    sentinels: AhoCorasick,
    /// For each sentinel, the routes whose own it is.
    owners: Vec<Vec<usize>>,
}

/// What a text holds in sentinels.
enum Found {
    /// None at all.
    Nothing,
    /// Only the route's own, at these ranges.
    Own(Vec<Range<usize>>),
    /// One that is not the route's own (or no whole sentinel).
    Foreign,
}

impl Credentials {
    pub(crate) fn new(config: &EgressConfig) -> Result<Self, EgressError> {
        let mut sentinels: Vec<String> = Vec::new();
        let mut owners: Vec<Vec<usize>> = Vec::new();
        let mut know = |sentinel: &str, owner: Option<usize>| {
            if sentinel.is_empty() {
                return;
            }
            let at = match sentinels.iter().position(|known| known == sentinel) {
                Some(at) => at,
                None => {
                    sentinels.push(sentinel.to_owned());
                    owners.push(Vec::new());
                    sentinels.len() - 1
                }
            };
            owners[at].extend(owner);
        };
        for sentinel in &config.policy.sentinels {
            know(sentinel, None);
        }
        let mut routes = Vec::with_capacity(config.policy.rules.len());
        for (route, rule) in config.policy.rules.iter().enumerate() {
            let Some(inject) = &rule.inject else {
                routes.push(None);
                continue;
            };
            for sentinel in &inject.sentinels {
                know(sentinel, Some(route));
            }
            routes.push(Some(credential(&rule.host, inject)?));
        }
        let sentinels = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&sentinels)
            .map_err(|err| EgressError::Config(format!("the sentinels: {err}")))?;
        Ok(Credentials { routes, sentinels, owners })
    }

    /// Swaps the route's own sentinels for its credential and strips every
    /// other sentinel, in the headers and the query of `parts`; sets the
    /// route's header. Returns the scrubber for the response, when the
    /// request carries a credential.
    pub(crate) fn apply(&self, route: usize, parts: &mut Parts) -> Option<Arc<Scrubber>> {
        // A live grant (past the manifest's routes) never carries a credential.
        let credential = self.routes.get(route).and_then(Option::as_ref);
        let real = credential.map(|credential| credential.real.as_slice());
        let mut built_pairs = Vec::new();
        self.swap_headers(&mut parts.headers, route, real, &mut built_pairs);
        self.swap_query(&mut parts.uri, route, real);
        let credential = credential?;
        // Compression would hide a reflected credential from the scrubber:
        // ask for the response uncompressed.
        parts.headers.remove(header::ACCEPT_ENCODING);
        parts.headers.insert(credential.header.clone(), credential.value.clone());
        if built_pairs.is_empty() {
            return Some(Arc::clone(&credential.scrubber));
        }
        // The pairs the client built carry the credential too; should the
        // automaton fail to build, the route's scrubber still catches the credential itself.
        let more = built_pairs
            .into_iter()
            .flat_map(|pair| [[&b"Basic "[..], &pair].concat(), pair])
            .map(|pattern| (pattern, credential.sentinel.clone()));
        let patterns = credential.scrubber_patterns().chain(more);
        Some(Scrubber::new(patterns).map_or_else(|_| Arc::clone(&credential.scrubber), Arc::new))
    }

    /// Where in `text` sentinels are, and whether all are route `route`'s own
    /// (`has_credential`: whether the route has one to swap them for).
    fn find(&self, text: &[u8], route: usize, has_credential: bool) -> Found {
        let mut own = Vec::new();
        for found in self.sentinels.find_iter(text) {
            let whole = text.get(found.end()).is_none_or(|&next| !(next.is_ascii_alphanumeric() || next == b'_'));
            if !(has_credential && whole && self.owners[found.pattern().as_usize()].contains(&route)) {
                return Found::Foreign;
            }
            own.push(found.range());
        }
        if own.is_empty() { Found::Nothing } else { Found::Own(own) }
    }

    fn swap_headers(&self, headers: &mut HeaderMap, route: usize, real: Option<&[u8]>, built_pairs: &mut Vec<Vec<u8>>) {
        let touched = |value: &HeaderValue| {
            self.sentinels.is_match(value.as_bytes())
                || basic_pair(value.as_bytes()).is_some_and(|pair| self.sentinels.is_match(&pair))
        };
        if !headers.values().any(touched) {
            return;
        }
        let mut kept = HeaderMap::with_capacity(headers.len());
        let mut name = None;
        for (next, value) in std::mem::take(headers) {
            if let Some(next) = next {
                name = Some(next);
            }
            if let (Some(name), Some(value)) = (&name, self.swap_header(value, route, real, built_pairs)) {
                kept.append(name.clone(), value);
            }
        }
        *headers = kept;
    }

    /// `value` with the route's sentinels swapped, or `None` to remove it.
    fn swap_header(
        &self,
        value: HeaderValue,
        route: usize,
        real: Option<&[u8]>,
        built_pairs: &mut Vec<Vec<u8>>,
    ) -> Option<HeaderValue> {
        let real_or_empty = real.unwrap_or_default();
        match self.find(value.as_bytes(), route, real.is_some()) {
            Found::Nothing => {}
            Found::Own(ranges) => return sensitive(&splice(value.as_bytes(), &ranges, real_or_empty)),
            Found::Foreign => return None,
        }
        let Some(pair) = basic_pair(value.as_bytes()) else { return Some(value) };
        match self.find(&pair, route, real.is_some()) {
            Found::Nothing => Some(value),
            Found::Own(ranges) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(splice(&pair, &ranges, real_or_empty));
                let value = sensitive(format!("Basic {encoded}").as_bytes());
                built_pairs.push(encoded.into_bytes());
                value
            }
            Found::Foreign => None,
        }
    }

    /// Swaps the route's sentinels in the query parameters of `uri`
    /// (percent-decoded) and drops the parameters with any other.
    fn swap_query(&self, uri: &mut Uri, route: usize, real: Option<&[u8]>) {
        let Some(query) = uri.query() else { return };
        if !self.sentinels.is_match(&percent_decode(query.as_bytes()).0) {
            return;
        }
        let encoded_real = real.map(percent_encode).unwrap_or_default();
        let mut params = Vec::new();
        for param in query.split('&') {
            let (decoded, offsets) = percent_decode(param.as_bytes());
            match self.find(&decoded, route, real.is_some()) {
                Found::Nothing => params.push(param.to_owned()),
                Found::Own(ranges) => {
                    let ranges: Vec<Range<usize>> =
                        ranges.into_iter().map(|range| offsets[range.start]..offsets[range.end]).collect();
                    params.push(
                        String::from_utf8_lossy(&splice(param.as_bytes(), &ranges, encoded_real.as_bytes()))
                            .into_owned(),
                    );
                }
                Found::Foreign => {}
            }
        }
        let query = params.join("&");
        let path_and_query = if query.is_empty() { uri.path().to_owned() } else { format!("{}?{query}", uri.path()) };
        // The new query holds only what the old one did and percent-encoded
        // bytes, so it parses; were it not to, the query would be dropped
        // rather than sent with a sentinel.
        let Ok(path_and_query) = path_and_query.parse().or_else(|_| uri.path().parse()) else { return };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(path_and_query);
        if let Ok(swapped) = Uri::from_parts(parts) {
            *uri = swapped;
        }
    }
}

impl Credential {
    /// The values every request on the route carries, each with what replaces it in a response.
    fn scrubber_patterns(&self) -> impl Iterator<Item = (Vec<u8>, Bytes)> + '_ {
        let value = self.value.as_bytes();
        let basic = value.get(..6).filter(|scheme| scheme.eq_ignore_ascii_case(b"basic ")).map(|_| value[6..].to_vec());
        let encoded = percent_encode(&self.real).into_bytes();
        [Some(self.real.clone()), Some(value.to_vec()), basic, (encoded != self.real).then_some(encoded)]
            .into_iter()
            .flatten()
            .map(|pattern| (pattern, self.sentinel.clone()))
    }
}

fn credential(host: &str, inject: &InjectedHeader) -> Result<Credential, EgressError> {
    let header = HeaderName::from_bytes(inject.name.as_bytes())
        .map_err(|_| EgressError::Config(format!("route {host}: `{}` is no valid header name", inject.name)))?;
    let value = sensitive(inject.value.expose().as_bytes()).ok_or_else(|| {
        EgressError::Config(format!(
            "route {host}: the value of {} (from {}) is no valid header value",
            inject.name, inject.source
        ))
    })?;
    let sentinel = match inject.sentinels.first() {
        Some(sentinel) => sentinel.clone(),
        None => format!("bot-bottle-hidden:{}", inject.source),
    };
    let mut credential = Credential {
        header,
        value,
        real: inject.credential.expose().as_bytes().to_vec(),
        sentinel: Bytes::from(sentinel),
        scrubber: Arc::new(Scrubber::new([]).map_err(|err| EgressError::Config(err.to_string()))?),
    };
    let scrubber = Scrubber::new(credential.scrubber_patterns())
        .map_err(|err| EgressError::Config(format!("route {host}: the response scrubber: {err}")))?;
    credential.scrubber = Arc::new(scrubber);
    Ok(credential)
}

/// A header value marked sensitive (kept out of hyper's HPACK table), or
/// `None` when `bytes` cannot be one.
fn sensitive(bytes: &[u8]) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_bytes(bytes).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The decoded `user:password` of an `Authorization: Basic …` value.
fn basic_pair(value: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    BASIC.decode(encoded.trim()).ok()
}

/// `text` with each of `ranges` (in order, not overlapping) replaced by `with`.
fn splice(text: &[u8], ranges: &[Range<usize>], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + ranges.len() * with.len());
    let mut last = 0;
    for range in ranges {
        out.extend_from_slice(&text[last..range.start]);
        out.extend_from_slice(with);
        last = range.end;
    }
    out.extend_from_slice(&text[last..]);
    out
}

/// `text` percent-decoded (a `%` not followed by two hex digits stays as
/// it is), and where in `text` each decoded byte starts (one more entry: the end).
fn percent_decode(text: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let hex = |byte: u8| char::from(byte).to_digit(16);
    let mut decoded = Vec::with_capacity(text.len());
    let mut offsets = Vec::with_capacity(text.len() + 1);
    let mut at = 0;
    while at < text.len() {
        offsets.push(at);
        match (text[at], text.get(at + 1).copied().and_then(hex), text.get(at + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push((high * 16 + low) as u8);
                at += 3;
            }
            (byte, ..) => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    offsets.push(text.len());
    (decoded, offsets)
}

/// `bytes` percent-encoded for a query component: all but the unreserved characters.
fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use bottle_core::sidecar::{ClientToken, EgressRule, Listen, Secret};
    use hyper::Request;

    use super::*;

    const OWN: &str = "bot-bottle-hidden:GH";

    fn credentials() -> Credentials {
        let inject = InjectedHeader {
            name: "authorization".into(),
            value: Secret::new("Bearer tok/1"),
            credential: Secret::new("tok/1"),
            sentinels: vec![OWN.into()],
            source: "$GH".into(),
        };
        let config = EgressConfig {
            listen: Listen::Tcp("127.0.0.1:0".into()),
            audit_log: "-".into(),
            grants: None,
            policy: bottle_core::sidecar::EgressPolicy {
                bottle: "b".into(),
                client_token: ClientToken::from_value("t").digest(),
                ca_cert_pem: String::new(),
                ca_key_pem: Secret::new(""),
                rules: vec![
                    EgressRule { inject: Some(inject), ..EgressRule::open("api.example.com") },
                    EgressRule::open("other.example.com"),
                ],
                sentinels: vec![OWN.into(), "bot-bottle-hidden:GH_OTHER".into()],
                extra_upstream_ca_pem: None,
                resolve: Default::default(),
            },
        };
        Credentials::new(&config).expect("credentials")
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::get(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    fn basic(pair: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
    }

    #[test]
    fn the_routes_own_sentinel_becomes_the_credential_anywhere_in_a_request() {
        let credentials = credentials();
        let token = format!("token {OWN}");
        let pair = basic(&format!("x-access-token:{OWN}"));
        let query = "/r?access_token=bot-bottle-hidden%3AGH&q=a+b%20c&other=bot-bottle-hidden:GH_OTHER&x";
        let mut parts = request(
            query,
            &[("x-token", &token), ("authorization", "Bearer nope"), ("x-git", &pair), ("accept-encoding", "gzip")],
        );
        let scrubber = credentials.apply(0, &mut parts).expect("a credential request is scrubbed");
        assert_eq!(parts.headers["x-token"], "token tok/1");
        assert_eq!(parts.headers["authorization"], "Bearer tok/1", "the route's header replaces the agent's");
        assert_eq!(parts.headers["x-git"], basic("x-access-token:tok/1").as_str(), "a client's Basic pair");
        assert!(parts.headers["x-git"].is_sensitive());
        assert!(!parts.headers.contains_key("accept-encoding"));
        assert_eq!(parts.uri, "/r?access_token=tok%2F1&q=a+b%20c&x", "swapped, the rest as it was");

        let reflected = format!("{} tok/1 tok%2F1 Bearer tok/1", basic("x-access-token:tok/1"));
        let clean = String::from_utf8(scrubber.replace(reflected.as_bytes()).expect("matches")).expect("text");
        assert_eq!(clean, format!("{OWN} {OWN} {OWN} {OWN}"));
    }

    #[test]
    fn other_sentinels_and_lookalikes_are_stripped() {
        let credentials = credentials();
        let mut parts = request(
            "/r?a=1&t=bot-bottle-hidden%3AGH",
            &[("authorization", &format!("Bearer {OWN}")), ("x-pair", &basic(&format!("u:{OWN}"))), ("x-keep", "kept")],
        );
        assert!(credentials.apply(1, &mut parts).is_none(), "no credential, nothing to scrub");
        assert!(!parts.headers.contains_key("authorization") && !parts.headers.contains_key("x-pair"), "{parts:?}");
        assert_eq!(parts.headers["x-keep"], "kept");
        assert_eq!(parts.uri, "/r?a=1");

        let mut parts = request(
            "/r?t=bot-bottle-hidden:GH_OTHER",
            &[("x-a", "bot-bottle-hidden:GH_OTHER"), ("x-b", "bot-bottle-hidden:GHX"), ("x-c", &format!("{OWN}!"))],
        );
        credentials.apply(0, &mut parts);
        assert!(!parts.headers.contains_key("x-a") && !parts.headers.contains_key("x-b"), "{parts:?}");
        assert_eq!(parts.headers["x-c"], "tok/1!", "a sentinel ends where a name does");
        assert_eq!(parts.uri, "/r");
    }

    #[test]
    fn percent_decoding_keeps_offsets_and_odd_escapes() {
        let (decoded, offsets) = percent_decode(b"a%3Ab%zz%4");
        assert_eq!(decoded, b"a:b%zz%4");
        assert_eq!(offsets, [0, 1, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(percent_encode(b"a b/~"), "a%20b%2F~");
    }
}
