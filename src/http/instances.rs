//! Several instances of one upstream, as the `URL[,URL...]` flags give
//! them (the services' orchestrators, the gateway's users and rides
//! services): the order to try them in, the one that answered last first,
//! and the check of the list at startup.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

/// The instances of an upstream, made from their base URLs, and which
/// answered last. Cheap to clone: the clones share which answered last.
#[derive(Debug)]
pub struct Instances<T> {
    all: Arc<[T]>,
    current: Arc<AtomicUsize>,
}

impl<T> Clone for Instances<T> {
    fn clone(&self) -> Self {
        Instances {
            all: self.all.clone(),
            current: self.current.clone(),
        }
    }
}

impl<T> Instances<T> {
    /// An instance made by `make` from each base URL of `urls` (separated
    /// by commas; blanks and a trailing `/` left out).
    pub fn new(urls: &str, make: impl Fn(&str) -> T) -> Self {
        let all: Vec<T> = bases(urls).into_iter().map(make).collect();
        Instances {
            all: all.into(),
            current: Arc::default(),
        }
    }

    /// Every instance once, with its place: the one that answered last
    /// first, then the ones after it, in turn.
    pub fn in_turn(&self) -> impl Iterator<Item = (usize, &T)> {
        let n = self.all.len();
        let first = self.current.load(Ordering::Relaxed);
        (0..n).map(move |i| {
            let at = (first + i) % n;
            (at, &self.all[at])
        })
    }

    /// The instance at `at` answered: it is tried first from now on.
    pub fn answered(&self, at: usize) {
        self.current.store(at, Ordering::Relaxed);
    }
}

fn bases(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(|u| u.trim().trim_end_matches('/'))
        .filter(|u| !u.is_empty())
        .collect()
}

/// Checks a list of base URLs given to flag `what` (`URL[,URL...]`, each
/// `http://`: the clients are built without TLS).
pub fn check_urls(what: &str, urls: &str) -> Result<()> {
    let bases = bases(urls);
    if bases.is_empty() {
        return Err(Error::bad(format!("{what}: no URL given")));
    }
    for base in bases {
        let url =
            reqwest::Url::parse(base).map_err(|e| Error::bad(format!("{what} {base:?}: {e}")))?;
        if url.scheme() != "http" {
            return Err(Error::bad(format!(
                "{what} {base:?}: only http:// (this build speaks no TLS)"
            )));
        }
        // The API's paths go after the base: a query or a fragment would
        // swallow them.
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::bad(format!(
                "{what} {base:?}: a base URL has no query or fragment"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_are_tried_from_the_one_that_answered_last() {
        let i = Instances::new(" http://a/, ,http://b", str::to_owned);
        let order = |i: &Instances<String>| -> Vec<String> {
            i.in_turn().map(|(_, b)| b.clone()).collect()
        };
        assert_eq!(order(&i), ["http://a", "http://b"]);
        i.clone().answered(1);
        assert_eq!(order(&i), ["http://b", "http://a"]);
        assert_eq!(Instances::new("", str::to_owned).in_turn().count(), 0);
    }

    #[test]
    fn base_urls_are_checked_before_any_request() {
        for good in [
            "http://127.0.0.1:8090",
            "http://a:1/, http://b/prefix",
            "http://127.0.0.1:1,,http://127.0.0.1:2",
        ] {
            assert!(check_urls("--x", good).is_ok(), "{good}");
        }
        // A query or a fragment would swallow the paths put after them.
        for bad in [
            "",
            " , ",
            "ftp://x",
            "https://a:1",
            "127.0.0.1:8090",
            "http://h:99999",
            "http://",
            "http://127.0.0.1:1#frag",
            "http://127.0.0.1:1?x=1",
            "http://a:1,http://b:2/?",
        ] {
            assert!(check_urls("--x", bad).is_err(), "{bad}");
        }
    }
}
