//! Transport errors as the kinds the SDK's retry policy acts on (the
//! order of the SDK's own client): timeouts and I/O failures are
//! transient, a request that could not be sent is the caller's.

use std::error::Error as StdError;

use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::retry::ErrorKind;

use super::connect::ConnectTimedOut;

pub fn classify(err: hyper_util::client::legacy::Error) -> ConnectorError {
    let hyper = find::<hyper::Error>(&err);
    let kind =
        if find::<ConnectTimedOut>(&err).is_some() || hyper.is_some_and(hyper::Error::is_timeout) {
            Kind::Timeout
        } else if hyper.is_some_and(hyper::Error::is_user) {
            Kind::User
        } else if err.is_connect()
            || find::<std::io::Error>(&err).is_some()
            || hyper.is_some_and(|h| h.is_closed() || h.is_canceled())
        {
            Kind::Io
        } else if hyper.is_some_and(hyper::Error::is_incomplete_message) {
            // S3 sometimes closes a kept-alive connection as a request starts.
            Kind::Transient
        } else {
            tracing::warn!(error = %err, "unrecognised error from the S3 connection; not retried");
            Kind::Other
        };
    let err = Box::new(err);
    match kind {
        Kind::Timeout => ConnectorError::timeout(err),
        Kind::User => ConnectorError::user(err),
        Kind::Io => ConnectorError::io(err),
        Kind::Transient => ConnectorError::other(err, Some(ErrorKind::TransientError)),
        Kind::Other => ConnectorError::other(err, None),
    }
}

enum Kind {
    Timeout,
    User,
    Io,
    Transient,
    Other,
}

/// The first error of type `E` in `err`'s source chain, `err` included.
/// An `io::Error`'s `source()` skips the error it wraps (it returns that
/// one's source), so a type only ever found inside an `io::Error` (such as
/// `rustls::Error` from a handshake) is not seen here.
fn find<'a, E: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    std::iter::successors(Some(err), |&e| e.source()).find_map(|e| e.downcast_ref::<E>())
}
