//! A stream's public live playlist (`GET /hls/{stream}/index.m3u8` without a session) rendered
//! once per window change instead of once per request. [`PlaylistCache`] holds the rendering
//! until [`PlaylistCache::invalidate`] is called when the window changes. Session playlists
//! are not cached here: each carries its own signed route and CDN base, and is rendered in one
//! buffer per request (`hls_session`, `hls_ads`). Pure: no sockets, no clock.

use std::cell::RefCell;

/// One window's rendered public playlist, until the window changes.
#[derive(Default)]
pub struct PlaylistCache {
    cached: RefCell<Option<Vec<u8>>>,
}

impl PlaylistCache {
    /// Forgets the rendering (the window changed).
    pub fn invalidate(&mut self) {
        *self.cached.get_mut() = None;
    }

    /// The public playlist: from the cache, or rendered by `render` and cached.
    pub fn without_session(&self, render: impl FnOnce() -> String) -> Vec<u8> {
        self.cached
            .borrow_mut()
            .get_or_insert_with(|| render().into_bytes())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_renders_once_per_change() {
        let mut cache = PlaylistCache::default();
        let renders = std::cell::Cell::new(0);
        let plain = || {
            renders.set(renders.get() + 1);
            "0.ts\n".to_owned()
        };
        assert_eq!(cache.without_session(plain), b"0.ts\n");
        assert_eq!(cache.without_session(plain), b"0.ts\n");
        assert_eq!(renders.get(), 1);
        cache.invalidate();
        assert_eq!(cache.without_session(plain), b"0.ts\n");
        assert_eq!(renders.get(), 2);
    }
}
