//! A socket's place in the node's socket budget (`listener/sockets.rs`), held for as long as
//! the socket is open.

use std::sync::Arc;

use crate::node::Node;

/// A socket under the node's budget (or its refusal reserve), released on drop.
#[derive(Debug)]
pub struct SocketPermit {
    node: Arc<Node>,
    refusal: bool,
}

impl SocketPermit {
    /// Takes a place in the budget unless it is spent.
    pub fn acquire(node: &Arc<Node>) -> Option<SocketPermit> {
        node.http.sockets.try_open().then(|| SocketPermit {
            node: node.clone(),
            refusal: false,
        })
    }

    /// Takes a place in the refusal reserve unless it is spent too.
    pub fn refusal(node: &Arc<Node>) -> Option<SocketPermit> {
        node.http.sockets.try_refusal().then(|| SocketPermit {
            node: node.clone(),
            refusal: true,
        })
    }

    /// The node the socket belongs to.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        self.node.http.sockets.release(self.refusal);
    }
}
