//! The baseline of the IPFS backend: the same daemon RPC calls `comms-ipfs` makes, issued as bare
//! HTTP requests (reqwest, pooled connections) with nothing around them: no deadlines, retries,
//! size limits, re-hashing, reply validation or resubscription. Implemented as a
//! [`Communication`] so that the harness measures it exactly as it measures the real backend; the
//! ratio of the two is what our layer costs.
//!
//! Like the backend, it publishes one message at a time, which is what kubo needs and not a cost of
//! our layer: kubo drops a publisher's messages that reach it out of sequence-number order (see
//! `comms-ipfs`'s docs). `block/put` takes kubo's `cid-codec`.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use comms::{
    Cid, Codec, Communication, Error, Limits, Message, Operation, PeerId, Subscription, Topic,
};
use futures::StreamExt;
use multibase::Base;
use serde_json::Value;

/// Bare RPC calls to one daemon.
#[derive(Clone)]
pub struct RawIpfs {
    http: reqwest::Client,
    api: String,
    peer: PeerId,
    /// Held for one `pubsub/pub` call.
    publishing: Arc<tokio::sync::Mutex<()>>,
}

impl RawIpfs {
    /// A client of the daemon at `api` (`http://host:port`).
    pub async fn connect(api: &str) -> anyhow::Result<RawIpfs> {
        let http = reqwest::Client::new();
        let api = format!("{}/api/v0", api.trim_end_matches('/'));
        let id: Value = http.post(format!("{api}/id")).send().await?.json().await?;
        let peer = id["ID"].as_str().unwrap_or_default().to_string();
        Ok(RawIpfs {
            http,
            api,
            peer: PeerId::new(peer),
            publishing: Arc::default(),
        })
    }

    async fn call(
        &self,
        operation: Operation,
        path: &str,
        query: &[(&str, String)],
        file: Option<Bytes>,
    ) -> Result<reqwest::Response, Error> {
        let mut request = self.http.post(format!("{}/{path}", self.api)).query(query);
        if let Some(data) = file {
            // The part's content type, as `comms-ipfs` sends it.
            let part = reqwest::multipart::Part::bytes(data.to_vec())
                .file_name("data")
                .mime_str("application/octet-stream")
                .expect("a valid MIME type");
            request = request.multipart(reqwest::multipart::Form::new().part("data", part));
        }
        let unavailable = |error: reqwest::Error| Error::Unavailable {
            operation,
            source: Box::new(error),
        };
        let response = request.send().await.map_err(unavailable)?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Err(Error::Unavailable {
            operation,
            source: format!("{path}: {status}: {body}").into(),
        })
    }

    async fn json(
        &self,
        operation: Operation,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, Error> {
        let response = self.call(operation, path, query, None).await?;
        response.json().await.map_err(|error| Error::Unavailable {
            operation,
            source: Box::new(error),
        })
    }
}

fn topic_arg(topic: &Topic) -> (&'static str, String) {
    ("arg", multibase::encode(Base::Base64Url, topic.as_str()))
}

fn peers_of(reply: &Value) -> Vec<PeerId> {
    let list = reply["Strings"].as_array().or(reply["Peers"].as_array());
    list.into_iter()
        .flatten()
        .filter_map(|p| p.as_str().or(p["Peer"].as_str()))
        .map(PeerId::new)
        .collect()
}

#[async_trait]
impl Communication for RawIpfs {
    fn local_peer(&self) -> PeerId {
        self.peer.clone()
    }

    fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: Limits::MIB - 16 * 1024,
            max_block_bytes: Limits::MIB,
        }
    }

    async fn broadcast(&self, topic: &Topic, data: Bytes) -> Result<(), Error> {
        let query = [topic_arg(topic)];
        let _turn = self.publishing.lock().await;
        self.call(Operation::Broadcast, "pubsub/pub", &query, Some(data))
            .await
            .map(drop)
    }

    async fn subscribe(&self, topic: &Topic) -> Result<Subscription, Error> {
        let query = [topic_arg(topic)];
        let response = self
            .call(Operation::Subscribe, "pubsub/sub", &query, None)
            .await?;
        let topic_name = topic.clone();
        // ndjson: split the byte stream into lines, decode each line's `data` field.
        let lines = response
            .bytes_stream()
            .scan(Vec::new(), |pending: &mut Vec<u8>, chunk| {
                let Ok(chunk) = chunk else {
                    return futures::future::ready(None);
                };
                pending.extend_from_slice(&chunk);
                let mut lines = Vec::new();
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    lines.push(pending.drain(..=end).collect::<Vec<u8>>());
                }
                futures::future::ready(Some(futures::stream::iter(lines)))
            })
            .flatten();
        let messages = lines.filter_map(move |line| {
            let topic = topic_name.clone();
            async move {
                let value: Value = serde_json::from_slice(&line).ok()?;
                let (_, data) = multibase::decode(value["data"].as_str()?).ok()?;
                let from = PeerId::new(value["from"].as_str().unwrap_or_default().to_string());
                Some(Message {
                    topic,
                    from,
                    data: Bytes::from(data),
                })
            }
        });
        Ok(Subscription::new(topic.clone(), messages))
    }

    async fn put(&self, codec: Codec, data: Bytes) -> Result<Cid, Error> {
        let query = [
            ("cid-codec", codec.name().to_string()),
            ("mhtype", "sha2-256".to_string()),
            ("pin", "true".to_string()),
        ];
        let reply = self
            .call(Operation::Put, "block/put", &query, Some(data))
            .await?;
        let reply: Value = reply.json().await.map_err(|error| Error::Unavailable {
            operation: Operation::Put,
            source: Box::new(error),
        })?;
        let key = reply["Key"].as_str().unwrap_or_default();
        key.parse().map_err(|_| Error::Unavailable {
            operation: Operation::Put,
            source: format!("no CID in {reply}").into(),
        })
    }

    async fn fetch(&self, cid: &Cid, _timeout: Duration) -> Result<Bytes, Error> {
        let query = [("arg", cid.to_string())];
        let response = self
            .call(Operation::Fetch, "block/get", &query, None)
            .await?;
        response.bytes().await.map_err(|error| Error::Unavailable {
            operation: Operation::Fetch,
            source: Box::new(error),
        })
    }

    async fn peers(&self) -> Result<Vec<PeerId>, Error> {
        Ok(peers_of(
            &self.json(Operation::Peers, "swarm/peers", &[]).await?,
        ))
    }

    async fn topic_peers(&self, topic: &Topic) -> Result<Vec<PeerId>, Error> {
        let query = [topic_arg(topic)];
        Ok(peers_of(
            &self.json(Operation::Peers, "pubsub/peers", &query).await?,
        ))
    }
}
