//! [`AppPath`]: a request path under `/fn/APP/...`, the one way callers name an app's
//! route on a router and on a host. Parsed once, by both.

/// The prefix of app-scoped paths.
pub const FN_PREFIX: &str = "/fn/";

/// A path of the form `/fn/APP` or `/fn/APP/REST`: the app's name and the path its
/// component sees (`/REST`, or `/` when there is none).
///
/// ```
/// use wasmesh_api::AppPath;
/// let p = AppPath::parse("/fn/demo/chat/x").unwrap();
/// assert_eq!((p.app(), p.rest()), ("demo", "/chat/x"));
/// assert_eq!(AppPath::parse("/fn/demo").unwrap().rest(), "/");
/// assert!(AppPath::parse("/v1/models").is_none());
/// assert_eq!(AppPath::uri("demo", "/chat"), "/fn/demo/chat");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppPath<'a> {
    app: &'a str,
    rest: &'a str,
}

impl<'a> AppPath<'a> {
    /// Splits a request path (no query) under `/fn/`; `None` for any other path.
    pub fn parse(path: &'a str) -> Option<Self> {
        let after = path.strip_prefix(FN_PREFIX)?;
        Some(match after.find('/') {
            Some(i) => Self { app: &after[..i], rest: &after[i..] },
            None => Self { app: after, rest: "/" },
        })
    }

    /// The app's name, as the path gives it (unchecked: look it up).
    pub fn app(&self) -> &'a str {
        self.app
    }

    /// The path inside the app, starting with `/`.
    pub fn rest(&self) -> &'a str {
        self.rest
    }

    /// The path that reaches `rest` of `app`: `/fn/APP/REST`.
    pub fn uri(app: &str, rest: &str) -> String {
        format!("{FN_PREFIX}{app}{rest}")
    }
}
