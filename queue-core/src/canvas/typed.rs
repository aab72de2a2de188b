//! Typed canvas: a chain's result type is its last task's, a [`Group`]'s members share one,
//! and a chord (a group [`then`](Group::then) a body) has its body's.
//!
//! ```no_run
//! # async fn example(app: queue_core::App) -> Result<(), Box<dyn std::error::Error>> {
//! # use queue_core::{Signature, TypedSignature};
//! # fn add(x: i64, y: i64) -> TypedSignature<i64> { TypedSignature::from_signature(Signature::new("tasks.add").arg(x).arg(y)) }
//! # fn add_to(y: i64) -> TypedSignature<i64> { TypedSignature::from_signature(Signature::new("tasks.add").arg(y)) }
//! # fn xsum() -> TypedSignature<i64> { TypedSignature::from_signature(Signature::new("tasks.xsum")) }
//! use queue_core::canvas::Group;
//! use std::time::Duration;
//! // With #[task]: add::new(2, 2).then(add::partial(1)), Group::of(…).then(xsum::partial()).
//! let three: i64 = add(1, 1).then(add_to(1)).send(&app).await?.get(Duration::from_secs(10)).await?;
//! let sums: Vec<i64> = Group::of((0..10).map(|i| add(i, i))).send(&app).await?.get(Duration::from_secs(10)).await?;
//! let total: i64 = Group::of((0..10).map(|i| add(i, i))).then(xsum()).send(&app).await?.get(Duration::from_secs(10)).await?;
//! # let _ = (three, sums, total); Ok(()) }
//! ```

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use super::{GroupResult, chord, group};
use crate::app::App;
use crate::error::Error;
use crate::signature::{Signature, TypedSignature};

/// A group whose members all return `T`; sent, a [`GroupResult<T>`].
pub struct Group<T> {
    signature: Signature,
    output: PhantomData<fn() -> T>,
}

impl<T> Clone for Group<T> {
    fn clone(&self) -> Self {
        Self {
            signature: self.signature.clone(),
            output: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Group<T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.signature.fmt(formatter)
    }
}

impl<T> Group<T> {
    /// The members, run in parallel.
    pub fn of(members: impl IntoIterator<Item = TypedSignature<T>>) -> Self {
        Self {
            signature: group(members),
            output: PhantomData,
        }
    }

    /// A chord: once every member finished, `body` gets their results as a `Vec<T>` in
    /// order; its result is the chord's.
    pub fn then<U>(self, body: TypedSignature<U>) -> TypedSignature<U> {
        let members = match super::Shape::of(&self.signature) {
            Ok(super::Shape::Group(members)) => members,
            _ => Vec::new(),
        };
        TypedSignature::from_signature(chord(members, body))
    }
}

impl<T: DeserializeOwned> Group<T> {
    /// Sends every member; their results, typed.
    pub async fn send(self, app: &App) -> Result<GroupResult<T>, Error> {
        Ok(app.send_group(self.signature).await?.typed())
    }
}

impl<T> From<Group<T>> for Signature {
    fn from(group: Group<T>) -> Signature {
        group.signature
    }
}

impl<T> TypedSignature<T> {
    /// This, then `next` with this one's result: a chain whose result is `next`'s.
    pub fn then<U>(self, next: TypedSignature<U>) -> TypedSignature<U> {
        TypedSignature::from_signature(Signature::from(self).then(next))
    }
}
