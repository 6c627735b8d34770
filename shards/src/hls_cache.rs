//! A stream's live playlist rendered once per window change instead of once per request.
//!
//! Segment URIs carry the viewer's session (`{seq}.ts?session=...`), so each answer differs,
//! but only there: [`Spliced`] keeps the text rendered with a marker in place of the session,
//! cut at the markers, and an answer is the pieces with the session copied between them (one
//! pass, one allocation, no formatting). [`PlaylistCache`] holds a window's two renderings
//! (with a session, and without one) until [`PlaylistCache::invalidate`] is called when the
//! window changes. Pure: no sockets, no clock.

use std::cell::RefCell;

/// Put where the session goes when rendering; a control character, which neither a
/// playlist's tags nor a session (a plain token) contain.
pub const MARK: &str = "\u{1}";

/// A rendered playlist cut where the session goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spliced {
    /// The text with the markers removed.
    text: String,
    /// Where in `text` a session goes, in order.
    cuts: Vec<usize>,
}

impl Spliced {
    /// From a playlist rendered with [`MARK`] as the session.
    pub fn from_marked(marked: &str) -> Spliced {
        let mut text = String::with_capacity(marked.len());
        let mut cuts = Vec::new();
        for (i, piece) in marked.split(MARK).enumerate() {
            if i > 0 {
                cuts.push(text.len());
            }
            text.push_str(piece);
        }
        Spliced { text, cuts }
    }

    /// The playlist with `session` at every cut.
    pub fn with(&self, session: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + self.cuts.len() * session.len());
        let mut from = 0;
        for &cut in &self.cuts {
            out.extend_from_slice(&self.text.as_bytes()[from..cut]);
            out.extend_from_slice(session.as_bytes());
            from = cut;
        }
        out.extend_from_slice(&self.text.as_bytes()[from..]);
        out
    }
}

#[derive(Default)]
struct Cached {
    with_session: Option<Spliced>,
    without: Option<Vec<u8>>,
}

/// One window's rendered playlists, until the window changes.
#[derive(Default)]
pub struct PlaylistCache {
    cached: RefCell<Cached>,
}

impl PlaylistCache {
    /// Forgets the renderings (the window changed).
    pub fn invalidate(&mut self) {
        *self.cached.get_mut() = Cached::default();
    }

    /// The playlist for `session`: from the cache, or rendered by `render_marked` (which
    /// renders with [`MARK`] as the session) and cached.
    pub fn with_session(&self, session: &str, render_marked: impl FnOnce() -> String) -> Vec<u8> {
        let mut cached = self.cached.borrow_mut();
        cached
            .with_session
            .get_or_insert_with(|| Spliced::from_marked(&render_marked()))
            .with(session)
    }

    /// The playlist for a request without a session: from the cache, or rendered by `render`.
    pub fn without_session(&self, render: impl FnOnce() -> String) -> Vec<u8> {
        let mut cached = self.cached.borrow_mut();
        cached
            .without
            .get_or_insert_with(|| render().into_bytes())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splicing_equals_rendering_with_the_session() {
        let render = |s: &str| {
            format!("#EXTM3U\n#EXTINF:1.000,\n0.ts?session={s}\n#EXTINF:1.000,\n1.ts?session={s}\n")
        };
        let spliced = Spliced::from_marked(&render(MARK));
        for session in ["abc", "", "a-much_longer-session-0123456789"] {
            assert_eq!(spliced.with(session), render(session).into_bytes());
        }
        let none = Spliced::from_marked("#EXTM3U\n0.ts\n");
        assert_eq!(none.with("x"), b"#EXTM3U\n0.ts\n");
        let edges = Spliced::from_marked(&format!("{MARK}a{MARK}{MARK}"));
        assert_eq!(edges.with("s"), b"sass");
    }

    #[test]
    fn the_cache_renders_once_per_change() {
        let mut cache = PlaylistCache::default();
        let renders = std::cell::Cell::new(0);
        let marked = || {
            renders.set(renders.get() + 1);
            format!("0.ts?session={MARK}\n")
        };
        assert_eq!(cache.with_session("a", marked), b"0.ts?session=a\n");
        assert_eq!(cache.with_session("b", marked), b"0.ts?session=b\n");
        assert_eq!(renders.get(), 1);
        cache.invalidate();
        assert_eq!(cache.with_session("c", marked), b"0.ts?session=c\n");
        assert_eq!(renders.get(), 2);
        let plain = || {
            renders.set(renders.get() + 1);
            "0.ts\n".to_owned()
        };
        assert_eq!(cache.without_session(plain), b"0.ts\n");
        assert_eq!(cache.without_session(plain), b"0.ts\n");
        assert_eq!(renders.get(), 3);
    }
}
