//! Bearer tokens between nodes and the collector.
//!
//! A collector may take one shared token (any node may send with it) and/or
//! one token per node (a batch sent with it must carry that node's id).
//! Tokens are kept as SHA-256 digests, and a presented token's digest is
//! compared with every one of them in constant time (`subtle`), whatever
//! matched, so the time taken says neither how much of a token was right
//! nor which token matched.

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// Longest token accepted (it travels in a header).
const MAX_TOKEN_CHARS: usize = 4096;

/// Who a request may write for.
#[derive(Debug, PartialEq)]
pub enum Access {
    Denied,
    /// Any node (no tokens configured, or the shared one).
    AnyNode,
    /// Only this node's batches.
    Node(String),
}

pub struct Tokens {
    /// (digest, node) with `None` for the shared token.
    entries: Vec<([u8; 32], Option<String>)>,
}

/// `Ok` if `token` can travel in an `Authorization: Bearer` header (RFC
/// 6750 characters, 1..4096 of them); else the ValueError message.
pub fn check_token(token: &str, what: &str) -> Result<(), String> {
    let ok = (1..=MAX_TOKEN_CHARS).contains(&token.chars().count())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} must be 1..{MAX_TOKEN_CHARS} characters of A-Z a-z 0-9 - . _ ~ + / =, got {} chars",
            token.chars().count()
        ))
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    pub fn new(shared: Option<&str>, per_node: &[(String, String)]) -> Result<Tokens, String> {
        let mut entries = Vec::with_capacity(per_node.len() + 1);
        if let Some(token) = shared {
            check_token(token, "token")?;
            entries.push((digest(token.as_bytes()), None));
        }
        for (node, token) in per_node {
            if node.is_empty() {
                return Err(format!("node_tokens keys must be node ids, got {node:?}"));
            }
            check_token(token, &format!("token of node {node:?}"))?;
            entries.push((digest(token.as_bytes()), Some(node.clone())));
        }
        let mut digests: Vec<_> = entries.iter().map(|(d, _)| *d).collect();
        digests.sort_unstable();
        digests.dedup();
        if digests.len() != entries.len() {
            return Err("every token must be different (shared and per-node ones)".into());
        }
        Ok(Tokens { entries })
    }

    pub fn required(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Access for an `Authorization` header value: `Bearer <token>`
    /// (scheme in any case, surrounding blanks ignored).
    pub fn access(&self, authorization: Option<&[u8]>) -> Access {
        if self.entries.is_empty() {
            return Access::AnyNode;
        }
        let value = authorization.unwrap_or_default().trim_ascii();
        let (scheme, presented) = match value.iter().position(|&b| b == b' ') {
            Some(i) => (&value[..i], value[i + 1..].trim_ascii()),
            None => (value, &b""[..]),
        };
        if !scheme.eq_ignore_ascii_case(b"bearer") || presented.is_empty() {
            return Access::Denied;
        }
        let presented = digest(presented);
        let mut found: Option<&Option<String>> = None;
        for (known, node) in &self.entries {
            // Every entry is compared; only the (rare) match branches.
            let equal: Choice = known.ct_eq(&presented);
            if bool::from(equal) {
                found = Some(node);
            }
        }
        match found {
            None => Access::Denied,
            Some(None) => Access::AnyNode,
            Some(Some(node)) => Access::Node(node.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_what_they_should() {
        let per_node = [
            ("n1".to_string(), "a1".to_string()),
            ("n2".to_string(), "a2".to_string()),
        ];
        let t = Tokens::new(Some("shared"), &per_node).unwrap();
        assert_eq!(t.access(Some(b"Bearer a2")), Access::Node("n2".into()));
        assert_eq!(t.access(Some(b"bearer  a1 ")), Access::Node("n1".into()));
        assert_eq!(t.access(Some(b"BEARER shared")), Access::AnyNode);
        assert_eq!(t.access(Some(b"Basic a1")), Access::Denied);
        assert_eq!(t.access(Some(b"Bearer a")), Access::Denied);
        assert_eq!(t.access(Some(b"Bearer a1x")), Access::Denied);
        assert_eq!(t.access(Some(b"Bearer")), Access::Denied);
        assert_eq!(t.access(None), Access::Denied);
        assert_eq!(
            Tokens::new(None, &[]).unwrap().access(None),
            Access::AnyNode
        );
    }

    #[test]
    fn bad_tokens_are_refused_early() {
        assert!(Tokens::new(Some("has space"), &[]).is_err());
        assert!(Tokens::new(Some(""), &[]).is_err());
        assert!(Tokens::new(Some(&"x".repeat(4097)), &[]).is_err());
        let same = [("n".to_string(), "same".to_string())];
        let clash = Tokens::new(Some("same"), &same).err().unwrap();
        assert!(clash.contains("different"));
        let unnamed = [(String::new(), "t".to_string())];
        assert!(Tokens::new(None, &unnamed).is_err());
    }
}
