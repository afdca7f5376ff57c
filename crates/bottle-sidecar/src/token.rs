//! The bottle's client token on the wire: both sidecars serve only clients
//! that present it, as the password of a Basic pair (`bb:TOKEN`, which curl,
//! git, Node and Python send from `http://bb:TOKEN@…` proxy URLs) or as a
//! bearer token. It is compared through its digest, in constant time.

use base64::Engine as _;
use bottle_core::sidecar::TokenDigest;
use hyper::header::HeaderValue;

/// Whether `value` (a `Proxy-Authorization` or `Authorization` header)
/// carries the token that `digest` checks.
pub(crate) fn presents(digest: &TokenDigest, value: Option<&HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return digest.matches(rest);
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(pair) = base64::engine::general_purpose::STANDARD.decode(rest) else {
        return false;
    };
    let pair = String::from_utf8_lossy(&pair);
    pair.split_once(':').is_some_and(|(_, token)| digest.matches(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_counts_as_a_basic_password_or_a_bearer_token_and_nothing_else_does() {
        let token = bottle_core::sidecar::ClientToken::mint().expect("token");
        let digest = token.digest();
        let basic = |pair: &str| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            HeaderValue::from_str(&format!("Basic {encoded}")).expect("header")
        };
        let bearer = HeaderValue::from_str(&format!("Bearer {}", token.expose())).expect("header");
        assert!(presents(&digest, Some(&basic(&format!("bb:{}", token.expose())))));
        assert!(presents(&digest, Some(&bearer)));
        assert!(!presents(&digest, None));
        assert!(!presents(&digest, Some(&basic("bb:wrong"))));
        assert!(!presents(&digest, Some(&basic(token.expose()))), "no colon, no password");
        assert!(!presents(&digest, Some(&HeaderValue::from_static("Basic !!notbase64"))));
        assert!(!presents(&digest, Some(&HeaderValue::from_str(&format!("Digest {}", token.expose())).expect("h"))));
    }
}
