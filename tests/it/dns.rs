//! A small authoritative DNS server for tests (UDP on 127.0.0.1): answers A queries from a
//! function of the name and the query's number, so tests can make a name resolve to private
//! addresses, or change its answer between two lookups (DNS rebinding). Answers carry TTL 0.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

type Answer = Arc<dyn Fn(&str, usize) -> Option<Ipv4Addr> + Send + Sync>;

pub struct TestDns {
    pub addr: SocketAddr,
    /// Every A query received: (name, query number for that name).
    queries: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestDns {
    /// `answer(name, n)` gives the address for the `n`th A query (from 0) of `name`, or `None`
    /// for NXDOMAIN.
    pub async fn start(answer: impl Fn(&str, usize) -> Option<Ipv4Addr> + Send + Sync + 'static) -> TestDns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let queries = Arc::new(Mutex::new(Vec::new()));
        let answer: Answer = Arc::new(answer);
        let log = queries.clone();
        let task = tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            loop {
                let Ok((length, peer)) = socket.recv_from(&mut buffer).await else { continue };
                if let Some(reply) = respond(&buffer[..length], &answer, &log) {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        TestDns { addr, queries, task }
    }

    /// How many A queries `name` got.
    pub fn queries_for(&self, name: &str) -> usize {
        self.queries.lock().unwrap().iter().filter(|q| q.as_str() == name).count()
    }
}

fn respond(query: &[u8], answer: &Answer, log: &Mutex<Vec<String>>) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: length-prefixed labels, then type and class.
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let length = *query.get(at)? as usize;
        at += 1;
        if length == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + length)?).to_lowercase());
        at += length;
    }
    let question_end = at + 4;
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let name = labels.join(".");
    let mut reply = Vec::with_capacity(question_end + 16);
    reply.extend_from_slice(&query[..2]); // id
    let address = if qtype == 1 {
        let number = {
            let mut log = log.lock().unwrap();
            let number = log.iter().filter(|q| **q == name).count();
            log.push(name.clone());
            number
        };
        answer(&name, number)
    } else {
        None
    };
    let known = qtype != 1 || address.is_some();
    // Response, authoritative, recursion desired/available; NXDOMAIN for unknown A names.
    reply.extend_from_slice(&[0x85, if known { 0x80 } else { 0x83 }]);
    reply.extend_from_slice(&1u16.to_be_bytes()); // questions
    reply.extend_from_slice(&(address.is_some() as u16).to_be_bytes()); // answers
    reply.extend_from_slice(&[0, 0, 0, 0]); // authority, additional
    reply.extend_from_slice(query.get(12..question_end)?);
    if let Some(address) = address {
        reply.extend_from_slice(&[0xc0, 0x0c]); // the question's name
        reply.extend_from_slice(&[0, 1, 0, 1]); // A, IN
        reply.extend_from_slice(&0u32.to_be_bytes()); // TTL 0: never cached
        reply.extend_from_slice(&4u16.to_be_bytes());
        reply.extend_from_slice(&address.octets());
    }
    Some(reply)
}
