//! redis-rs implementation of [`RedisNode`](super::RedisNode).
