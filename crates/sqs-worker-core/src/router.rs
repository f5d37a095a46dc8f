//! `Router`: one queue, several message types, one handler per type.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;

use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::envelope::CowStr;
use crate::error::Error;
use crate::extract::{AckReason, acknowledge};
use crate::handler::{Handler, IntoHandler};
use crate::message::Message;
use crate::visibility::BoxFuture;

/// Where a [`Router`] reads a message's type. The first source (in the
/// configured order) that has one wins.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TypeSource {
    /// An SQS message attribute (`String` or `Number`). With raw SNS
    /// delivery, SNS's message attributes arrive here too.
    Attribute(String),
    /// The EventBridge `detail-type`.
    DetailType,
    /// The `Subject` of a wrapped SNS notification.
    SnsSubject,
    /// A message attribute of a wrapped SNS notification.
    SnsAttribute(String),
    /// A top-level string field of a JSON body (e.g. `"kind"`).
    Field(String),
}

impl TypeSource {
    /// [`TypeSource::Attribute`].
    pub fn attribute(name: impl Into<String>) -> Self {
        Self::Attribute(name.into())
    }
    /// [`TypeSource::SnsAttribute`].
    pub fn sns_attribute(name: impl Into<String>) -> Self {
        Self::SnsAttribute(name.into())
    }
    /// [`TypeSource::Field`].
    pub fn field(name: impl Into<String>) -> Self {
        Self::Field(name.into())
    }

    fn reads_body(&self) -> bool {
        !matches!(self, Self::Attribute(_))
    }

    fn body_key(&self) -> &str {
        match self {
            Self::Attribute(_) => "",
            Self::DetailType => "detail-type",
            Self::SnsSubject => "Subject",
            Self::SnsAttribute(_) => "MessageAttributes",
            Self::Field(name) => name,
        }
    }
}

impl fmt::Display for TypeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attribute(n) => write!(f, "attribute `{n}`"),
            Self::DetailType => f.write_str("EventBridge `detail-type`"),
            Self::SnsSubject => f.write_str("SNS `Subject`"),
            Self::SnsAttribute(n) => write!(f, "SNS attribute `{n}`"),
            Self::Field(n) => write!(f, "body field `{n}`"),
        }
    }
}

/// At most this many type sources: the body is read once into a fixed array.
const MAX_SOURCES: usize = 8;
/// Longest type name an error repeats.
const MAX_TYPE_IN_ERROR: usize = 128;

/// Why a [`Router`] had no handler for a message (a permanent failure unless
/// a fallback is set).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// A type no route is registered for.
    #[error("message {message_id}: no route for message type {message_type:?}")]
    NoRoute {
        /// The message.
        message_id: String,
        /// Its type (at most 128 bytes of it).
        message_type: String,
    },
    /// No configured source had a type.
    #[error("message {message_id}: no message type in {sources}")]
    NoType {
        /// The message.
        message_id: String,
        /// The sources looked in, in order.
        sources: String,
    },
}

/// A type-erased handler (one boxed future per call).
trait DynHandler: Send + Sync + 'static {
    fn call(&self, msg: Message) -> BoxFuture<'_, Result<(), Error>>;
}

impl<H: Handler> DynHandler for H {
    fn call(&self, msg: Message) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.handle(msg))
    }
}

enum Unrouted {
    Fail,
    Acknowledge,
    Handler(Box<dyn DynHandler>),
}

/// Sends each message to the handler registered for its type; itself a
/// [`Handler`], so it runs in both runners, under `sqs_worker::run` and
/// inside the idempotency layer.
///
/// The type is read from the configured [`TypeSource`]s in order (default:
/// the message attribute `type`); sources in the body are read in one pass
/// that parses nothing but the wanted fields. One hash lookup finds the
/// route. Each route keeps its own argument shape (`Json<T>`, `Sns<T>`,
/// `EventBridge<T>`, `S3Event`, `Message`).
///
/// A message with no type or an unknown one fails permanently (dead-letter
/// queue) with the type in the error ([`RouteError`]), unless a
/// [`fallback`](Self::fallback) handles it or
/// [`acknowledge_unrouted`](Self::acknowledge_unrouted) deletes it (counted
/// in [`ACKNOWLEDGED`](crate::runner::observe::names::ACKNOWLEDGED), `reason="unrouted"`).
///
/// ```
/// use sqs_worker_core::{Error, EventBridge, Json, Router, Sns, TypeSource};
/// #[derive(serde::Deserialize)] struct Placed { order_id: u64 }
/// #[derive(serde::Deserialize)] struct Cancelled { order_id: u64 }
/// #[derive(serde::Deserialize)] struct Shipped { order_id: u64 }
/// async fn placed(Json(p): Json<Placed>) -> Result<(), Error> { let _ = p.order_id; Ok(()) }
/// async fn cancelled(e: EventBridge<Cancelled>) -> Result<(), Error> { let _ = e.detail.order_id; Ok(()) }
/// async fn shipped(s: Sns<Shipped>) -> Result<(), Error> { let _ = s.message.order_id; Ok(()) }
///
/// let router = Router::new()
///     .type_from([
///         TypeSource::attribute("type"),
///         TypeSource::DetailType,
///         TypeSource::SnsSubject,
///         TypeSource::field("kind"),
///     ])
///     .route("OrderPlaced", placed)
///     .route("OrderCancelled", cancelled)
///     .route("OrderShipped", shipped);
/// # let _ = router;
/// ```
pub struct Router {
    routes: HashMap<Box<str>, Box<dyn DynHandler>>,
    sources: Vec<TypeSource>,
    reads_body: bool,
    unrouted: Unrouted,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut routes: Vec<&str> = self.routes.keys().map(|k| &**k).collect();
        routes.sort_unstable();
        f.debug_struct("Router")
            .field("routes", &routes)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// No routes; the type from the message attribute `type`; unrouted
    /// messages fail permanently.
    pub fn new() -> Self {
        Self {
            routes: HashMap::new(),
            sources: vec![TypeSource::attribute("type")],
            reads_body: false,
            unrouted: Unrouted::Fail,
        }
    }

    /// Where to read the type, in order (replaces the default).
    ///
    /// # Panics
    /// With no source or more than 8.
    #[must_use]
    pub fn type_from(mut self, sources: impl IntoIterator<Item = TypeSource>) -> Self {
        self.sources = sources.into_iter().collect();
        assert!(
            (1..=MAX_SOURCES).contains(&self.sources.len()),
            "Router::type_from takes 1 to {MAX_SOURCES} sources"
        );
        self.reads_body = self.sources.iter().any(TypeSource::reads_body);
        self
    }

    /// Sends messages of type `message_type` to `handler` (an async fn of
    /// any supported shape, or a [`Handler`]).
    ///
    /// # Panics
    /// If `message_type` already has a route.
    #[must_use]
    pub fn route<A, H: IntoHandler<A>>(mut self, message_type: &str, handler: H) -> Self {
        let previous = self
            .routes
            .insert(message_type.into(), Box::new(handler.into_handler()));
        assert!(
            previous.is_none(),
            "Router::route: type {message_type:?} is routed twice"
        );
        self
    }

    /// Sends messages with no type or an unknown one to `handler`.
    #[must_use]
    pub fn fallback<A, H: IntoHandler<A>>(mut self, handler: H) -> Self {
        self.unrouted = Unrouted::Handler(Box::new(handler.into_handler()));
        self
    }

    /// Deletes messages with no type or an unknown one as successes, counted
    /// in [`ACKNOWLEDGED`](crate::runner::observe::names::ACKNOWLEDGED)
    /// (`reason="unrouted"`), instead of failing them.
    #[must_use]
    pub fn acknowledge_unrouted(mut self) -> Self {
        self.unrouted = Unrouted::Acknowledge;
        self
    }

    /// The type of `msg`, from the first source that has one.
    pub fn message_type<'m>(&self, msg: &'m Message) -> Option<Cow<'m, str>> {
        let mut from_body: Option<[Option<Cow<'m, str>>; MAX_SOURCES]> = None;
        for (i, source) in self.sources.iter().enumerate() {
            if let TypeSource::Attribute(name) = source {
                if let Some(t) = msg.message_attribute(name).and_then(|a| a.as_str()) {
                    return Some(Cow::Borrowed(t));
                }
                continue;
            }
            let found = from_body.get_or_insert_with(|| self.read_body(msg.body()));
            if let Some(t) = found[i].take() {
                return Some(t);
            }
        }
        None
    }

    /// One pass over a JSON object body, keeping the wanted values (by source
    /// index). Anything else (not JSON, not an object) has none.
    fn read_body<'m>(&self, body: &'m str) -> [Option<Cow<'m, str>>; MAX_SOURCES] {
        if !self.reads_body {
            return Default::default();
        }
        let mut de = serde_json::Deserializer::from_str(body);
        de.deserialize_map(BodyTypes {
            sources: &self.sources,
        })
        .unwrap_or_default()
    }

    fn lookup(&self, msg: &Message) -> Result<&dyn DynHandler, RouteError> {
        match self.message_type(msg) {
            Some(t) => match self.routes.get(&*t) {
                Some(h) => Ok(&**h),
                None => Err(RouteError::NoRoute {
                    message_id: msg.id().to_owned(),
                    message_type: clip(&t).to_owned(),
                }),
            },
            None => Err(RouteError::NoType {
                message_id: msg.id().to_owned(),
                sources: self
                    .sources
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

/// At most [`MAX_TYPE_IN_ERROR`] bytes, cut at a character boundary.
fn clip(s: &str) -> &str {
    let mut end = s.len().min(MAX_TYPE_IN_ERROR);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Handler for Router {
    fn handle(&self, msg: Message) -> impl Future<Output = Result<(), Error>> + Send {
        let route = self.lookup(&msg);
        async move {
            match (route, &self.unrouted) {
                (Ok(h), _) => h.call(msg).await,
                (Err(_), Unrouted::Handler(h)) => h.call(msg).await,
                (Err(_), Unrouted::Acknowledge) => {
                    acknowledge(&msg, AckReason::Unrouted);
                    Ok(())
                }
                (Err(e), Unrouted::Fail) => Err(Error::permanent(e)),
            }
        }
    }
}

/// Reads the configured sources' values from a body's top-level object.
struct BodyTypes<'s> {
    sources: &'s [TypeSource],
}

impl<'de> Visitor<'de> for BodyTypes<'_> {
    type Value = [Option<Cow<'de, str>>; MAX_SOURCES];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: Self::Value = Default::default();
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            let wanted = self
                .sources
                .iter()
                .any(|s| s.reads_body() && s.body_key() == key.0);
            if !wanted {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let raw: &'de RawValue = map.next_value()?;
            for (i, source) in self.sources.iter().enumerate() {
                if !source.reads_body() || source.body_key() != key.0 {
                    continue;
                }
                out[i] = match source {
                    TypeSource::SnsAttribute(name) => sns_attribute(raw, name),
                    _ => string(raw),
                };
            }
        }
        Ok(out)
    }
}

/// A JSON string value, or nothing.
fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<CowStr<'_>>(raw.get())
        .ok()
        .map(|s| s.0)
}

/// `{"name": {"Type": "String", "Value": "…"}}` → the value of `name`.
fn sns_attribute<'a>(raw: &'a RawValue, name: &str) -> Option<Cow<'a, str>> {
    #[derive(serde::Deserialize)]
    struct Attr<'a> {
        #[serde(rename = "Value", borrow)]
        value: CowStr<'a>,
    }
    let attrs: HashMap<CowStr<'a>, &'a RawValue> = serde_json::from_str(raw.get()).ok()?;
    let (_, v) = attrs.iter().find(|(k, _)| k.0 == name)?;
    serde_json::from_str::<Attr<'a>>(v.get())
        .ok()
        .map(|a| a.value.0)
}
