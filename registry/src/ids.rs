//! Random identifiers (upload sessions, temporary files, chunk nonces).
//!
//! `uuid::Uuid::new_v4` panics when the system has no randomness source (a
//! static binary in an image without `/dev/urandom` and an old kernel, a
//! seccomp profile denying `getrandom`); inside a request that drops the
//! connection. Here the failure is an error, which the request reports.

/// A random 128-bit id as 32 lowercase hex digits (a v4 UUID, which is
/// also what upload URLs are checked against).
pub fn random_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|err| std::io::Error::other(format!("no randomness source: {err}")))?;
    Ok(uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .simple()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v4_uuids_and_differ() -> std::io::Result<()> {
        let (a, b) = (random_id()?, random_id()?);
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let parsed = uuid::Uuid::try_parse(&a).map_err(std::io::Error::other)?;
        assert_eq!(parsed.get_version_num(), 4);
        Ok(())
    }
}
