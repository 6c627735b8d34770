//! The external ad decision server (VAST): when a stream's program names one, each session
//! of a break is asked for its ads, with the viewer's profile in the query. The session gets
//! the selectors' plan at once (the fallback); an answer within the program's timeout that
//! names ads of the library replaces it before the break reaches the playlist. A timeout, an
//! error or an answer naming no known ad leaves the fallback in place.
//!
//! One task per request on the application core's executor (never blocking the core). Plain
//! HTTP/1.0 (`Connection: close`, so no chunked bodies) to an IP address literal; answers
//! over 1 MiB are refused. VAST (2, 3 and 4) is read with quick-xml: each `<Ad>` (ordered by
//! its `sequence`, then document order) names a library ad by its `id`, its creatives' `adId`
//! or `id`, or the file name of a `<MediaFile>` URL (`.../{ad}.m3u8`). Wrappers
//! (`<VASTAdTagURI>`) are not followed.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use quick_xml::events::Event;
use quick_xml::Reader;

use crate::app::App;

/// Largest VAST answer read.
const MAX_ANSWER: usize = 1024 * 1024;

/// Why a VAST request gave no ads.
#[derive(Debug, thiserror::Error)]
pub enum VastError {
    #[error("the ad decision server URL must be http://IP:PORT/...: {0}")]
    Url(String),
    #[error("the ad decision server could not be reached: {0}")]
    Io(#[from] std::io::Error),
    #[error("the ad decision server answered HTTP {0}")]
    Status(u16),
    #[error("the ad decision server's answer is not an HTTP response or is over 1 MiB")]
    Malformed,
    #[error("the VAST document is not well-formed XML: {0}")]
    Xml(String),
    #[error("no answer within {0} ms")]
    Timeout(u64),
}

/// One `<Ad>` of a VAST answer: the names it may give a library ad, best first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VastAd {
    pub sequence: Option<u32>,
    pub names: Vec<String>,
}

/// The ads of a VAST document, in play order.
pub fn parse(xml: &str) -> Result<Vec<VastAd>, VastError> {
    let mut reader = Reader::from_str(xml);
    let mut ads: Vec<VastAd> = Vec::new();
    let mut current: Option<VastAd> = None;
    let mut in_media_file = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| VastError::Xml(e.to_string()))?;
        match event {
            Event::Start(e) | Event::Empty(e) => {
                let attr = |name: &[u8]| -> Option<String> {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == name)
                        .and_then(|a| a.unescape_value().ok().map(|v| v.trim().to_owned()))
                        .filter(|v| !v.is_empty())
                };
                match e.name().as_ref() {
                    b"Ad" => {
                        let mut ad = VastAd {
                            sequence: attr(b"sequence").and_then(|s| s.parse().ok()),
                            names: Vec::new(),
                        };
                        ad.names.extend(attr(b"id"));
                        current = Some(ad);
                    }
                    b"Creative" => {
                        if let Some(ad) = current.as_mut() {
                            ad.names.extend(attr(b"adId").or_else(|| attr(b"AdID")));
                            ad.names.extend(attr(b"id"));
                        }
                    }
                    b"MediaFile" => in_media_file = true,
                    _ => {}
                }
            }
            Event::Text(t) if in_media_file => {
                if let (Some(ad), Ok(url)) = (current.as_mut(), t.unescape()) {
                    ad.names.extend(file_stem(url.trim()));
                }
            }
            Event::CData(t) if in_media_file => {
                let url = String::from_utf8_lossy(&t).into_owned();
                if let Some(ad) = current.as_mut() {
                    ad.names.extend(file_stem(url.trim()));
                }
            }
            Event::End(e) => match e.name().as_ref() {
                b"Ad" => ads.extend(current.take()),
                b"MediaFile" => in_media_file = false,
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    // Pods by `sequence`; stand-alone ads keep document order after them.
    ads.sort_by_key(|a| a.sequence.unwrap_or(u32::MAX));
    Ok(ads)
}

/// `https://x/ads/spot.m3u8?x=1` -> `spot`.
fn file_stem(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next()?;
    let name = path.rsplit('/').next()?;
    let stem = name.split('.').next()?;
    (!stem.is_empty()).then(|| stem.to_owned())
}

/// Answers every VAST request the core queues, until the task is dropped.
pub async fn serve(app: Rc<RefCell<App>>) {
    let queued = app.borrow().vast_queued();
    loop {
        queued.wait().await;
        let requests = app.borrow_mut().take_vast_requests();
        for request in requests {
            let app = app.clone();
            glommio::spawn_local(async move {
                let timeout = request.timeout_ms;
                let answer = futures_lite::future::or(ask(&request.url), async {
                    glommio::timer::sleep(Duration::from_millis(timeout)).await;
                    Err(VastError::Timeout(timeout))
                })
                .await;
                let mut app = app.borrow_mut();
                match answer {
                    Ok(ads) => {
                        let names: Vec<Vec<String>> = ads.into_iter().map(|a| a.names).collect();
                        app.vast_answer(&request, &names);
                    }
                    Err(e) => {
                        tracing::info!(session = %request.session, error = %e, "VAST: the selectors' ads stay");
                        app.vast_fallback(&request);
                    }
                }
            })
            .detach();
        }
    }
}

/// One GET; the VAST document's ads.
async fn ask(url: &str) -> Result<Vec<VastAd>, VastError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| VastError::Url(url.to_owned()))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: std::net::SocketAddr = authority
        .parse()
        .map_err(|_| VastError::Url(url.to_owned()))?;
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = glommio::net::TcpStream::connect(addr)
        .await
        .map_err(std::io::Error::from)?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/xml, text/xml\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        if raw.len() > MAX_ANSWER {
            return Err(VastError::Malformed);
        }
    }
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(VastError::Malformed)?;
    let head = String::from_utf8_lossy(&raw[..at]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(VastError::Malformed)?;
    if status != 200 {
        return Err(VastError::Status(status));
    }
    parse(&String::from_utf8_lossy(&raw[at + 4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pods_creatives_and_media_files() {
        let xml = r#"<?xml version="1.0"?>
<VAST version="4.1">
  <Ad id="second" sequence="2"><InLine><Creatives>
    <Creative adId="ios-spot"><Linear><MediaFiles>
      <MediaFile delivery="streaming" type="application/x-mpegURL"><![CDATA[https://ads.example/hls/x-spot.m3u8?c=1]]></MediaFile>
    </MediaFiles></Linear></Creative></Creatives></InLine></Ad>
  <Ad id="first" sequence="1"><InLine><Creatives><Creative id="c9"><Linear><MediaFiles>
      <MediaFile type="video/mp2t">https://ads.example/a/plain.ts</MediaFile>
  </MediaFiles></Linear></Creative></Creatives></InLine></Ad>
  <Ad><InLine/></Ad>
</VAST>"#;
        let ads = parse(xml).unwrap();
        assert_eq!(ads.len(), 3);
        assert_eq!(ads[0].names, ["first", "c9", "plain"]);
        assert_eq!(ads[1].names, ["second", "ios-spot", "x-spot"]);
        assert!(ads[2].names.is_empty());
        assert!(
            parse("<VAST version=\"3.0\"/>").unwrap().is_empty(),
            "no ads"
        );
        assert!(
            parse("<VAST><Ad id=\"x\"></VAST>").is_err(),
            "not well-formed"
        );
        assert!(parse("").unwrap().is_empty());
    }
}
