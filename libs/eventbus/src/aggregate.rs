//! Event-sourced aggregates: the one mechanism both services commit through.
//!
//! An aggregate (an order, a payment) is the snapshot its last event carries.
//! Its events live on `<prefix>.<owner>.<id>.<event>`: the owner (the
//! customer) and the event in the subject let consumers take only the events
//! they act on (`filter_subjects`) and lists page through one owner's
//! aggregates from the stream's own per-subject index ([`crate::index`]).
//! [`crate::subject`] spells that layout.
//! Optimistic concurrency covers the whole aggregate: an append expects the
//! last sequence of `<prefix>.<owner>.<id>.*`
//! (`Nats-Expected-Last-Subject-Sequence-Subject`, server 2.11+).
//!
//! [`AggregateStore`] loads, decides and appends with bounded conflict
//! retries, and remembers what this replica appended last per aggregate, so
//! a consumer that reacts to another service's event can decide without
//! reading the aggregate back: the remembered sequence is the expected one,
//! and optimistic concurrency turns a stale memory into a conflict and a
//! re-read, never into a lost update.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use bytes::Bytes;

use crate::{
    JetStream,
    envelope::{
        EventEnvelope,
        headers::{CE_TYPE, MIGRATED_FROM},
    },
    identity,
    index::{self, IndexError, IndexedEvent},
    store::{AppendError, Appended, EventStore, LoadError},
    subject::{
        aggregate_filter, aggregate_key, any_owner_filter, event_subject, fired_subject,
        owner_token, schedule_subject,
    },
};

/// A kind of aggregate whose every event carries its whole state.
///
/// Implemented by a marker type of the service (its aggregate's state is a
/// generated proto message, which the service may not implement foreign
/// traits for). The service says what its events are ([`Kind::EVENTS`],
/// [`Kind::event_type`]) and which ids it writes ([`Kind::uuids`],
/// [`Kind::owner`]); framing, decoding by `ce-type` and the identity check
/// are this trait's, the same for every kind.
pub trait Kind: Send + Sync + 'static {
    /// The aggregate's state.
    type State: Clone + Send + Sync + 'static;
    /// The kinds of change its events record.
    type Event: Copy + Send + Sync + 'static;

    /// The stream its events live in.
    const STREAM: &'static str;
    /// The first subject token of its events (`orders`).
    const PREFIX: &'static str;
    /// `ce-source` of its events.
    const SOURCE: &'static str;
    /// The subject token of the event that opens every aggregate of this
    /// kind, when one event always does (lists then page through those
    /// events alone); `None` when the first event varies.
    const OPENING: Option<&'static str>;
    /// What one aggregate is called in reasons (`order`).
    const NOUN: &'static str;
    /// What its owner's id is called in reasons (`a customer id`).
    const OWNER_NOUN: &'static str;
    /// Every kind of change, one per event message: what an event is looked
    /// up among by its `ce-type`.
    const EVENTS: &'static [Self::Event];

    /// Its id (a canonical UUID).
    fn id(state: &Self::State) -> &str;
    /// Its owner, whose token is the subject's second one.
    fn owner(state: &Self::State) -> &str;
    /// Its version: 1 after the first event, one more after each.
    fn version(state: &Self::State) -> u64;
    /// The ids it carries that orderflow always writes as canonical UUIDs,
    /// each with what reasons call it (`an order id`): its own id first.
    fn uuids(state: &Self::State) -> impl IntoIterator<Item = (&'static str, &str)>;
    /// The event message that records `event` (see [`crate::event_type!`]).
    fn event_type(event: Self::Event) -> EventType<Self::State>;

    /// The timer (a subject token, see [`AggregateStore::append_scheduling`]) that
    /// `event` makes pointless, whose pending schedule its commit removes:
    /// an order's payment deadline once its payment is decided. `None` (the
    /// default) for events that end no timer.
    fn ends_timer(_event: Self::Event) -> Option<&'static str> {
        None
    }

    /// The subject token of `event`, also the suffix of its event id.
    fn token(event: Self::Event) -> &'static str {
        Self::event_type(event).token
    }

    /// The kind of change an event of `ce_type` records, if it is one of
    /// this aggregate's.
    fn event_for(ce_type: &str) -> Option<Self::Event> {
        Self::EVENTS
            .iter()
            .copied()
            .find(|event| Self::event_type(*event).is(ce_type))
    }

    /// `state`, the aggregate after `event`, framed as that event:
    /// its `ce-type` and protobuf body.
    fn encode(event: Self::Event, state: &Self::State) -> (String, Bytes) {
        let event_type = Self::event_type(event);
        (
            event_type.ce_type(),
            Bytes::from((event_type.encode)(state.clone())),
        )
    }

    /// The aggregate an event carries, chosen by the event's `ce-type`; why
    /// not when the event is not one of this kind, does not decode, or
    /// carries ids this system never writes ([`Kind::check_identity`]).
    fn decode(ce_type: Option<&str>, payload: &[u8]) -> Result<Self::State, CorruptEvent> {
        let ce_type = ce_type.ok_or(CorruptEvent::NoType)?;
        let event = Self::event_for(ce_type).ok_or_else(|| CorruptEvent::UnknownType {
            noun: Self::NOUN,
            ce_type: ce_type.to_owned(),
        })?;
        let state = (Self::event_type(event).decode)(payload)
            .map_err(|source| CorruptEvent::Undecodable {
                ce_type: ce_type.to_owned(),
                source,
            })?
            .ok_or_else(|| CorruptEvent::Empty {
                ce_type: ce_type.to_owned(),
                noun: Self::NOUN,
            })?;
        Self::check_identity(&state).map_err(|reason| CorruptEvent::ForeignIds {
            ce_type: ce_type.to_owned(),
            reason,
        })?;
        Ok(state)
    }

    /// Why `state` cannot be an aggregate orderflow wrote: an id of
    /// [`Kind::uuids`] that is not a canonical UUID, or an owner id outside
    /// the rule owner ids enter by (see [`crate::identity`]).
    ///
    /// An event carrying one comes from a foreign or broken publisher. No
    /// retry can apply it (its subject would be invalid), so it is refused
    /// at once, as corrupt, instead of being retried as if NATS were down.
    fn check_identity(state: &Self::State) -> Result<(), String> {
        for (what, id) in Self::uuids(state) {
            identity::require_uuid(what, id)?;
        }
        identity::require_owner(Self::OWNER_NOUN, Self::owner(state))
    }
}

/// Why an event is not an aggregate of a kind ([`Kind::decode`]). No retry
/// changes any of these: a consumer dead-letters the event, a read answers
/// that the stored event is corrupt.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CorruptEvent {
    /// It has no `ce-type` header.
    #[error("the event has no ce-type header")]
    NoType,
    /// Its `ce-type` names none of the kind's event messages.
    #[error("unknown {noun} event type {ce_type:?}")]
    UnknownType {
        /// What one aggregate of the kind is called (`order`).
        noun: &'static str,
        /// The header's value.
        ce_type: String,
    },
    /// Its body is not a valid encoding of the message its `ce-type` names.
    #[error("undecodable {ce_type}: {source}")]
    Undecodable {
        /// The header's value.
        ce_type: String,
        /// The decoder's error.
        source: prost::DecodeError,
    },
    /// Its body decodes but carries no aggregate.
    #[error("{ce_type} carries no {noun}")]
    Empty {
        /// The header's value.
        ce_type: String,
        /// What one aggregate of the kind is called (`order`).
        noun: &'static str,
    },
    /// It carries ids orderflow never writes ([`Kind::check_identity`]).
    #[error("{ce_type} carries {reason}")]
    ForeignIds {
        /// The header's value.
        ce_type: String,
        /// Which id, and what is wrong with it (see [`crate::identity`]).
        reason: String,
    },
}

/// One event message of an aggregate kind: its `ce-type` (the message's
/// full protobuf name, so the header can never disagree with the body's
/// schema), its subject token, and how its body carries the aggregate.
///
/// Written with [`crate::event_type!`].
pub struct EventType<S> {
    /// The subject token, also the suffix of the event id.
    pub token: &'static str,
    /// The message's protobuf package (`orderflow.order.v1`).
    pub package: &'static str,
    /// The message's name (`OrderCreated`).
    pub name: &'static str,
    /// The body of the message carrying the aggregate.
    pub encode: fn(S) -> Vec<u8>,
    /// The aggregate a body of the message carries, if it carries one.
    pub decode: fn(&[u8]) -> Result<Option<S>, prost::DecodeError>,
}

impl<S> EventType<S> {
    /// The `ce-type` of its events: `<package>.<name>`, as prost's
    /// `Name::full_name` spells it.
    pub fn ce_type(&self) -> String {
        format!("{}.{}", self.package, self.name)
    }

    /// Whether `ce_type` is this message's, without building its name
    /// (every load asks).
    pub fn is(&self, ce_type: &str) -> bool {
        ce_type
            .strip_prefix(self.package)
            .and_then(|rest| rest.strip_prefix('.'))
            == Some(self.name)
    }
}

/// The [`EventType`](crate::aggregate::EventType) of event message `$message`,
/// whose field `$field` carries the aggregate, on subject token `$token`:
/// `event_type!(OrderCreated.order, "created")`.
///
/// A macro because prost's generated messages share no trait that reaches
/// the field: each message needs its own two small functions.
#[macro_export]
macro_rules! event_type {
    ($message:ident . $field:ident, $token:expr) => {
        $crate::aggregate::EventType {
            token: $token,
            package: <$message as $crate::__prost::Name>::PACKAGE,
            name: <$message as $crate::__prost::Name>::NAME,
            encode: |state| {
                $crate::__prost::Message::encode_to_vec(&$message {
                    $field: ::core::option::Option::Some(state),
                })
            },
            decode: |body| {
                <$message as $crate::__prost::Message>::decode(body).map(|message| message.$field)
            },
        }
    };
}

/// An aggregate as last committed, with the stream sequence of that event,
/// which the next append expects.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<A> {
    /// The aggregate.
    pub state: A,
    /// The stream sequence of its last event.
    pub sequence: u64,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading an aggregate's last event failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A batched read (a page of a list, a migration) failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// An append was not committed.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// A stored event is not an aggregate of this kind.
    #[error("aggregate {id} has a corrupt event: {reason}")]
    Corrupt {
        /// The aggregate.
        id: String,
        /// What is wrong with its event.
        #[source]
        reason: CorruptEvent,
    },
}

impl StoreError {
    /// What a client is told, naming the aggregate as `noun` (`order`):
    /// which stored event is unreadable, that a lost race may be retried, or
    /// that the event store is unavailable. One wording for every service.
    pub fn client_message(&self, noun: &str) -> String {
        match self {
            Self::Corrupt { id, reason } => {
                format!("stored event of {noun} {id} is unreadable: {reason}")
            }
            Self::Append(AppendError::Conflict { .. }) => format!("{self}; retry"),
            Self::Load(_) | Self::Index(_) | Self::Append(_) => {
                format!("event store unavailable: {self}")
            }
        }
    }
}

/// Why a [`AggregateStore::change`] did not commit.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError<E> {
    /// The decision refused the change.
    #[error("the change was refused")]
    Refused(E),
    /// No such aggregate.
    #[error("aggregate {0} does not exist")]
    NotFound(String),
    /// Other writers kept winning the race.
    #[error("aggregate {0} kept changing concurrently")]
    Contended(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a change starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// What this replica appended last, when it has it; a consumer reacting
    /// to an event uses it, as a stale start only costs a conflict.
    Recent,
    /// The stream: what a caller is answered with must be the truth even
    /// when nothing changes.
    Stream,
}

/// How many times a change is decided again after losing a race.
const MAX_ATTEMPTS: usize = 8;

/// How many aggregates one list call of a service reads at most before it
/// answers with a shorter page (a filter that matches rarely): the same
/// bound for every service's lists.
pub const LIST_SCAN_LIMIT: usize = 5_000;

/// How many aggregates a replica remembers: every saga in flight at
/// thousands per second, with seconds of backlog (8,192 missed under a
/// closed-loop overload, and each miss is a read), some 30 MB at most.
const RECENT_CAPACITY: usize = 65_536;

/// The aggregates of one kind, on their stream.
pub struct AggregateStore<K: Kind> {
    store: EventStore,
    recent: Arc<Recent<K::State>>,
}

impl<K: Kind> Clone for AggregateStore<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            recent: self.recent.clone(),
        }
    }
}

impl<K: Kind> AggregateStore<K> {
    /// The store of `A` on `js`.
    pub fn new(js: JetStream) -> Self {
        Self {
            store: EventStore::new(js, K::STREAM, K::SOURCE),
            recent: Arc::new(Recent::new(RECENT_CAPACITY)),
        }
    }

    /// The event store underneath (for watches and readiness).
    pub fn events(&self) -> &EventStore {
        &self.store
    }

    /// Aggregate `id` as last committed, or `None` when it has no event.
    pub async fn load(&self, id: &str) -> Result<Option<Versioned<K::State>>, StoreError> {
        self.load_filter(id, &any_owner_filter(K::PREFIX, id)).await
    }

    /// Aggregate `id` of `owner` as last committed (a read of its own
    /// subjects only).
    pub async fn load_owned(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Option<Versioned<K::State>>, StoreError> {
        self.load_filter(id, &aggregate_filter(K::PREFIX, owner, id))
            .await
    }

    async fn load_filter(
        &self,
        id: &str,
        filter: &str,
    ) -> Result<Option<Versioned<K::State>>, StoreError> {
        let Some(event) = self.store.load_last(filter).await? else {
            return Ok(None);
        };
        let ce_type = event.headers.get(CE_TYPE).map(|v| v.as_str());
        let state = K::decode(ce_type, &event.payload).map_err(|reason| StoreError::Corrupt {
            id: id.to_owned(),
            reason,
        })?;
        Ok(Some(Versioned {
            state,
            sequence: event.sequence,
        }))
    }

    /// What this replica appended last to aggregate `id`, if it remembers.
    pub fn recent(&self, id: &str) -> Option<Versioned<K::State>> {
        self.recent.get(id)
    }

    /// Commits `event` with `state` as the aggregate after it, expecting the
    /// aggregate's subjects to end at `expected` (0: a new aggregate).
    pub async fn append(
        &self,
        event: K::Event,
        state: &K::State,
        expected: u64,
    ) -> Result<Appended, AppendError> {
        let (envelope, guard) = Self::framed(event, state);
        let appended = self.store.append(&envelope, expected, &guard).await?;
        self.remember(state, &appended);
        Ok(appended)
    }

    /// [`AggregateStore::append`], together with scheduling the aggregate's
    /// timer `timer` to fire at `at` (see [`EventStore::append_scheduling`]):
    /// `body` is what the firing carries, on
    /// `<prefix>.~<timer>.<owner>.<id>.fired`, for the kind's service to act
    /// on. An event whose [`Kind::ends_timer`] names the timer removes the
    /// schedule when it commits, so a decided aggregate's timer never fires.
    pub async fn append_scheduling<M: prost::Message + prost::Name>(
        &self,
        event: K::Event,
        state: &K::State,
        expected: u64,
        timer: &str,
        at: std::time::SystemTime,
        body: &M,
    ) -> Result<Appended, AppendError> {
        let (envelope, guard) = Self::framed(event, state);
        let (owner, id) = (K::owner(state), K::id(state));
        let schedule = EventEnvelope::new(
            schedule_subject(K::PREFIX, owner, id, timer),
            format!("{id}.{timer}"),
            id.to_owned(),
            body,
        );
        let target = fired_subject(K::PREFIX, owner, id, timer);
        let appended = self
            .store
            .append_scheduling(&envelope, expected, &guard, &schedule, &target, at)
            .await?;
        self.remember(state, &appended);
        Ok(appended)
    }

    /// `event` of `state` framed for the stream, and the filter of the
    /// aggregate's subjects its append is guarded on.
    fn framed(event: K::Event, state: &K::State) -> (EventEnvelope, String) {
        let token = K::token(event);
        let (ce_type, payload) = K::encode(event, state);
        let envelope = EventEnvelope {
            subject: event_subject(K::PREFIX, K::owner(state), K::id(state), token),
            id: format!("{}.{token}", K::id(state)),
            aggregate_id: K::id(state).to_owned(),
            ce_type,
            payload,
            ends_schedule: K::ends_timer(event)
                .map(|timer| schedule_subject(K::PREFIX, K::owner(state), K::id(state), timer)),
        };
        (
            envelope,
            aggregate_filter(K::PREFIX, K::owner(state), K::id(state)),
        )
    }

    /// Remembers `state` as this replica's last append of its aggregate.
    fn remember(&self, state: &K::State, appended: &Appended) {
        if !appended.duplicate {
            self.recent.put(
                K::id(state),
                Versioned {
                    state: state.clone(),
                    sequence: appended.sequence,
                },
            );
        }
    }

    /// Lets `decide` choose the next event and state of aggregate `id` from
    /// its current one, and commits it; decides again from the stream when
    /// another writer got there first. Returns the aggregate as committed,
    /// or unchanged when `decide` chose nothing, and whether it changed.
    pub async fn change<E, F>(
        &self,
        id: &str,
        start: Start,
        mut decide: F,
    ) -> Result<(K::State, bool), ChangeError<E>>
    where
        F: FnMut(&K::State) -> Result<Option<(K::Event, K::State)>, E>,
    {
        let mut current = match start {
            Start::Recent => self.recent(id),
            Start::Stream => None,
        };
        for _ in 0..MAX_ATTEMPTS {
            let now = match current.take() {
                Some(now) => now,
                None => self
                    .load(id)
                    .await?
                    .ok_or_else(|| ChangeError::NotFound(id.to_owned()))?,
            };
            let Some((event, next)) = decide(&now.state).map_err(ChangeError::Refused)? else {
                return Ok((now.state, false));
            };
            match self.append(event, &next, now.sequence).await {
                Ok(Appended {
                    duplicate: false, ..
                }) => return Ok((next, true)),
                // Committed already (by an earlier attempt or another
                // replica), or lost a race: decide again from the stream.
                Ok(Appended {
                    duplicate: true, ..
                })
                | Err(AppendError::Conflict { .. }) => {
                    self.recent.forget(id);
                }
                Err(error) => return Err(StoreError::Append(error).into()),
            }
        }
        Err(ChangeError::Contended(id.to_owned()))
    }

    /// One page of aggregates, oldest first: those of `owner` (or of every
    /// owner), whose current state `keep` accepts, starting at stream
    /// sequence `from` (1 for the first page). Reads at most `scan_limit`
    /// aggregates, so a filter that matches rarely returns a shorter page
    /// with a cursor instead of scanning everything at once. Events that are
    /// no aggregate of this kind are skipped, not an error: one foreign
    /// event in a stream must not take every list down.
    pub async fn page(
        &self,
        owner: Option<&str>,
        from: u64,
        size: usize,
        scan_limit: usize,
        keep: impl Fn(&K::State) -> bool,
    ) -> Result<Page<K::State>, StoreError> {
        let js = self.store.jetstream();
        let owner_part = owner.map_or_else(|| "*".to_owned(), owner_token);
        let filter = format!("{}.{owner_part}.*.{}", K::PREFIX, K::OPENING.unwrap_or("*"));
        let size = size.max(1);
        let mut page = Page {
            items: Vec::new(),
            next: None,
        };
        let mut cursor = from.max(1);
        let mut scanned = 0;
        loop {
            let want = size - page.items.len();
            let batch = index::next_batch(js, K::STREAM, &filter, cursor, want).await?;
            let Some(last) = batch.events.last() else {
                return Ok(page);
            };
            cursor = last.sequence + 1;
            let mut opened = Vec::new();
            for event in &batch.events {
                // What is not an aggregate of ours (a foreign or broken
                // publisher's event, which the consumers dead-letter) is no
                // item of a list, and must not fail the whole list.
                let Some(state) = ours::<K>(event) else {
                    continue;
                };
                // Without an opening event kind, the aggregate's first
                // event is its opening.
                if K::OPENING.is_some() || K::version(&state) == 1 {
                    opened.push(state);
                }
            }
            scanned += batch.events.len();
            let filters: Vec<String> = opened
                .iter()
                .map(|a| aggregate_filter(K::PREFIX, K::owner(a), K::id(a)))
                .collect();
            let latest = self.latest(&filters).await?;
            for opening in opened {
                let state = latest.get(K::id(&opening)).cloned().unwrap_or(opening);
                if keep(&state) {
                    page.items.push(state);
                }
            }
            if batch.pending == 0 {
                return Ok(page);
            }
            if page.items.len() >= size || scanned >= scan_limit {
                page.next = Some(cursor);
                return Ok(page);
            }
        }
    }

    /// The current state of each aggregate whose filter is given, by id.
    async fn latest(&self, filters: &[String]) -> Result<HashMap<String, K::State>, StoreError> {
        let events = index::last_per_subject(self.store.jetstream(), K::STREAM, filters).await?;
        let mut latest: HashMap<String, (u64, K::State)> = HashMap::new();
        for event in events {
            let Some(state) = ours::<K>(&event) else {
                continue;
            };
            let newer = latest
                .get(K::id(&state))
                .is_none_or(|(sequence, _)| *sequence < event.sequence);
            if newer {
                latest.insert(K::id(&state).to_owned(), (event.sequence, state));
            }
        }
        Ok(latest.into_iter().map(|(id, (_, a))| (id, a)).collect())
    }
}

/// What [`AggregateStore::migrate_legacy`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Migration {
    /// Aggregates found under the old layout.
    pub found: usize,
    /// Copied to the new layout by this run.
    pub moved: usize,
    /// Already under the new layout (an earlier run, or new events).
    pub present: usize,
    /// Not copied: their events are not aggregates of this kind (each is
    /// named in the log).
    pub unreadable: usize,
}

impl<K: Kind> AggregateStore<K> {
    /// Copies every aggregate stored under the subject layout of
    /// orderflow 0.1, `<prefix>.<id>` (one subject per aggregate), to
    /// `<prefix>.<owner>.<id>.<event>`: its first event (so lists find it)
    /// and, when it has more, its last (its state), each with its headers
    /// and body as stored, a new `Nats-Msg-Id` and [`MIGRATED_FROM`].
    ///
    /// The old events stay where they are. A run can be repeated and
    /// resumed: an aggregate already under the new layout is left alone
    /// (optimistic concurrency refuses a second first event), unless a run
    /// stopped between its two copies, whose last is then copied. Run it
    /// while no service writes the stream.
    pub async fn migrate_legacy(&self) -> Result<Migration, StoreError> {
        let js = self.store.jetstream();
        let legacy = format!("{}.*", K::PREFIX);
        // First and last sequence per aggregate, in order of first event:
        // the copies keep creation order, which lists page by.
        let mut order: Vec<String> = Vec::new();
        let mut bounds: HashMap<String, (u64, u64)> = HashMap::new();
        let mut cursor = 1;
        loop {
            let batch = index::next_batch(js, K::STREAM, &legacy, cursor, 1000).await?;
            let Some(last) = batch.events.last() else {
                break;
            };
            cursor = last.sequence + 1;
            for event in &batch.events {
                let Some(id) = event
                    .subject
                    .strip_prefix(K::PREFIX)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .map(str::to_owned)
                else {
                    tracing::warn!(stream = K::STREAM, sequence = event.sequence, subject = %event.subject, "an old event without its subject; not copied");
                    continue;
                };
                bounds
                    .entry(id.clone())
                    .and_modify(|(_, last)| *last = event.sequence)
                    .or_insert_with(|| {
                        order.push(id);
                        (event.sequence, event.sequence)
                    });
            }
            if batch.pending == 0 {
                break;
            }
        }
        let mut report = Migration {
            found: order.len(),
            ..Migration::default()
        };
        for id in order {
            let (first, last) = bounds[&id];
            let present = match self.load(&id).await {
                Ok(present) => present,
                // Its new-layout events do not decode: left alone, and said.
                Err(StoreError::Corrupt { id, reason }) => {
                    tracing::warn!(stream = K::STREAM, %id, %reason, "the aggregate's new-layout events are unreadable; not copied");
                    report.unreadable += 1;
                    continue;
                }
                Err(error) => return Err(error),
            };
            if let Some(present) = present {
                // A run that stopped between an aggregate's two copies left
                // its first one only: its state is still to be copied.
                if first != last && self.behind_legacy(&present, last).await? {
                    if self.copy_legacy(last, present.sequence).await?.is_some() {
                        report.moved += 1;
                    } else {
                        report.unreadable += 1;
                    }
                } else {
                    report.present += 1;
                }
                continue;
            }
            let mut expected = 0;
            let mut copied = true;
            for sequence in if first == last {
                vec![first]
            } else {
                vec![first, last]
            } {
                match self.copy_legacy(sequence, expected).await? {
                    Some(appended) => expected = appended,
                    None => {
                        copied = false;
                        break;
                    }
                }
            }
            if copied {
                report.moved += 1;
            } else {
                report.unreadable += 1;
            }
        }
        Ok(report)
    }

    /// Whether `present`, an aggregate already under the new layout, is
    /// older than its old-layout event at `sequence` (its last).
    async fn behind_legacy(
        &self,
        present: &Versioned<K::State>,
        sequence: u64,
    ) -> Result<bool, StoreError> {
        let js = self.store.jetstream();
        let Some(event) = index::at_sequence(js, K::STREAM, sequence).await? else {
            return Ok(false);
        };
        let ce_type = event.headers.get(CE_TYPE).map(|v| v.as_str());
        Ok(K::decode(ce_type, &event.payload)
            .is_ok_and(|old| K::version(&present.state) < K::version(&old)))
    }

    /// Copies the old-layout event at `sequence` to its new subject,
    /// expecting the aggregate's new subjects to end at `expected`; its new
    /// sequence, or `None` (logged) when it is not an event of this kind.
    async fn copy_legacy(&self, sequence: u64, expected: u64) -> Result<Option<u64>, StoreError> {
        let js = self.store.jetstream();
        let Some(event) = index::at_sequence(js, K::STREAM, sequence).await? else {
            tracing::warn!(
                stream = K::STREAM,
                sequence,
                "an old event vanished; not copied"
            );
            return Ok(None);
        };
        let ce_type = event.headers.get(CE_TYPE).map(|v| v.as_str().to_owned());
        let decoded = K::decode(ce_type.as_deref(), &event.payload);
        let kind = ce_type.as_deref().and_then(K::event_for);
        let (Ok(state), Some(kind)) = (decoded, kind) else {
            tracing::warn!(
                stream = K::STREAM,
                subject = %event.subject,
                sequence,
                "an old event is no aggregate of this kind; not copied"
            );
            return Ok(None);
        };
        let mut headers = async_nats::HeaderMap::new();
        for (name, values) in event.headers.iter() {
            let name: &str = name.as_ref();
            // The server's and the old append's own headers stay behind.
            if name.starts_with("Nats-") {
                continue;
            }
            for value in values {
                headers.append(name, value.as_str());
            }
        }
        let ce_id = event
            .headers
            .get(crate::envelope::headers::CE_ID)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_else(|| format!("{}.{}", K::id(&state), K::token(kind)));
        headers.insert(
            crate::envelope::headers::MSG_ID,
            format!("migrated.{ce_id}").as_str(),
        );
        headers.insert(
            MIGRATED_FROM,
            format!("{}#{sequence}", event.subject).as_str(),
        );
        let subject = event_subject(K::PREFIX, K::owner(&state), K::id(&state), K::token(kind));
        let guard = aggregate_filter(K::PREFIX, K::owner(&state), K::id(&state));
        match self
            .store
            .append_copy(&subject, headers, event.payload, expected, &guard)
            .await
        {
            Ok(appended) => Ok(Some(appended.sequence)),
            Err(error) => Err(StoreError::Append(error)),
        }
    }
}

/// The aggregate `event` carries, when it is one of kind `K` stored where
/// its own events go (a body naming another aggregate than its subject does
/// is not one).
fn ours<K: Kind>(event: &IndexedEvent) -> Option<K::State> {
    let ce_type = event.headers.get(CE_TYPE).map(|v| v.as_str());
    let state = K::decode(ce_type, &event.payload).ok()?;
    let key = format!(
        "{}.{}.{}",
        K::PREFIX,
        owner_token(K::owner(&state)),
        K::id(&state)
    );
    (aggregate_key(&event.subject) == key).then_some(state)
}

/// One page of a list.
#[derive(Clone, Debug)]
pub struct Page<A> {
    /// The aggregates, oldest first.
    pub items: Vec<A>,
    /// Where the next page starts, or `None` after the last page.
    pub next: Option<u64>,
}

/// The aggregates this replica appended last, bounded: the oldest entry
/// goes first when it is full. Entries only save reads; optimistic
/// concurrency makes a stale one harmless.
struct Recent<A> {
    inner: Mutex<RecentInner<A>>,
    capacity: usize,
}

struct RecentInner<A> {
    entries: HashMap<String, Versioned<A>>,
    order: VecDeque<String>,
}

impl<A: Clone> Recent<A> {
    fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(RecentInner {
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecentInner<A>> {
        // Plain values: a poisoned map is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> Option<Versioned<A>> {
        self.lock().entries.get(id).cloned()
    }

    fn put(&self, id: &str, value: Versioned<A>) {
        let mut inner = self.lock();
        let newer = inner
            .entries
            .get(id)
            .is_none_or(|known| known.sequence < value.sequence);
        if !newer {
            return;
        }
        if inner.entries.insert(id.to_owned(), value).is_none() {
            inner.order.push_back(id.to_owned());
            while inner.order.len() > self.capacity {
                if let Some(oldest) = inner.order.pop_front() {
                    inner.entries.remove(&oldest);
                }
            }
        }
    }

    fn forget(&self, id: &str) {
        // Its place in `order` stays until it comes round: removing from
        // the middle of a deque is linear, and a missing entry is harmless.
        self.lock().entries.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recent_map_keeps_the_newest_and_forgets_the_oldest_when_full() {
        let recent = Recent::new(2);
        let v = |sequence| Versioned {
            state: sequence,
            sequence,
        };
        recent.put("a", v(5));
        recent.put("a", v(3));
        assert_eq!(recent.get("a"), Some(v(5)), "an older append never wins");
        recent.put("b", v(1));
        recent.put("c", v(2));
        assert_eq!(recent.get("a"), None, "the oldest entry went first");
        assert_eq!(recent.get("c"), Some(v(2)));
        recent.forget("c");
        assert_eq!(recent.get("c"), None);
    }

    /// A stand-in for a service's aggregate: its own id, the id of another
    /// aggregate it names, an owner, a version.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Thing {
        #[prost(string, tag = "1")]
        thing_id: String,
        #[prost(string, tag = "2")]
        owner_id: String,
        #[prost(string, tag = "3")]
        parent_id: String,
        #[prost(uint64, tag = "4")]
        version: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct ThingOpened {
        #[prost(message, optional, tag = "1")]
        thing: Option<Thing>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct ThingClosed {
        #[prost(message, optional, tag = "1")]
        thing: Option<Thing>,
    }

    impl prost::Name for ThingOpened {
        const NAME: &'static str = "ThingOpened";
        const PACKAGE: &'static str = "test.thing.v1";
    }

    impl prost::Name for ThingClosed {
        const NAME: &'static str = "ThingClosed";
        const PACKAGE: &'static str = "test.thing.v1";
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum ThingEvent {
        Opened,
        Closed,
    }

    struct Things;

    impl Kind for Things {
        type State = Thing;
        type Event = ThingEvent;
        const STREAM: &'static str = "THINGS";
        const PREFIX: &'static str = "things";
        const SOURCE: &'static str = "/test";
        const OPENING: Option<&'static str> = Some("opened");
        const NOUN: &'static str = "thing";
        const OWNER_NOUN: &'static str = "an owner id";
        const EVENTS: &'static [ThingEvent] = &[ThingEvent::Opened, ThingEvent::Closed];

        fn id(thing: &Thing) -> &str {
            &thing.thing_id
        }
        fn owner(thing: &Thing) -> &str {
            &thing.owner_id
        }
        fn version(thing: &Thing) -> u64 {
            thing.version
        }
        fn uuids(thing: &Thing) -> impl IntoIterator<Item = (&'static str, &str)> {
            [
                ("a thing id", &*thing.thing_id),
                ("a parent id", &thing.parent_id),
            ]
        }
        fn event_type(event: ThingEvent) -> EventType<Thing> {
            match event {
                ThingEvent::Opened => crate::event_type!(ThingOpened.thing, "opened"),
                ThingEvent::Closed => crate::event_type!(ThingClosed.thing, "closed"),
            }
        }
    }

    const ID: &str = "0190c5a2-7b1e-7c3d-9f00-123456789abc";

    fn thing(thing_id: &str, owner_id: &str, parent_id: &str) -> Thing {
        Thing {
            thing_id: thing_id.to_owned(),
            owner_id: owner_id.to_owned(),
            parent_id: parent_id.to_owned(),
            version: 1,
        }
    }

    #[test]
    fn events_are_framed_and_read_back_by_their_message_name() {
        use prost::{Message, Name};
        let state = thing(ID, "o.1", ID);
        for (event, message, token) in [
            (ThingEvent::Opened, ThingOpened::full_name(), "opened"),
            (ThingEvent::Closed, ThingClosed::full_name(), "closed"),
        ] {
            let (ce_type, body) = Things::encode(event, &state);
            assert_eq!(ce_type, message);
            assert_eq!(Things::token(event), token);
            assert_eq!(Things::event_for(&ce_type), Some(event));
            assert_eq!(Things::decode(Some(&ce_type), &body), Ok(state.clone()));
            assert_eq!(
                body,
                ThingOpened {
                    thing: Some(state.clone())
                }
                .encode_to_vec(),
                "the body is the message carrying the aggregate"
            );
        }
        for near in [
            "test.thing.v1ThingOpened",
            "test.thing.v1.ThingOpened.x",
            "x.test.thing.v1.ThingOpened",
            "test.thing.v1.",
            "ThingOpened",
            "",
        ] {
            assert_eq!(Things::event_for(near), None, "{near:?}");
        }
    }

    #[test]
    fn every_reason_says_what_is_wrong() {
        use prost::{Message, Name};
        let opened = ThingOpened::full_name();
        let body = |state: Thing| ThingOpened { thing: Some(state) }.encode_to_vec();
        let reason = |ce_type: Option<&str>, payload: &[u8]| match Things::decode(ce_type, payload)
        {
            Ok(state) => panic!("{ce_type:?} decoded as {state:?}"),
            Err(reason) => reason,
        };
        let said = |ce_type: Option<&str>, payload: &[u8]| reason(ce_type, payload).to_string();
        assert_eq!(
            reason(None, &body(thing(ID, "o", ID))),
            CorruptEvent::NoType
        );
        assert_eq!(
            said(None, &body(thing(ID, "o", ID))),
            "the event has no ce-type header"
        );
        assert_eq!(
            said(Some("test.other.v1.Opened"), &[]),
            "unknown thing event type \"test.other.v1.Opened\""
        );
        let undecodable = reason(Some(&opened), &[0xff]);
        assert!(
            matches!(&undecodable, CorruptEvent::Undecodable { .. }),
            "{undecodable:?}"
        );
        assert!(
            std::error::Error::source(&undecodable).is_some(),
            "the decoder's error is kept"
        );
        assert!(
            undecodable
                .to_string()
                .starts_with("undecodable test.thing.v1.ThingOpened: ")
        );
        assert_eq!(
            said(Some(&opened), &[]),
            "test.thing.v1.ThingOpened carries no thing"
        );
        assert_eq!(
            said(Some(&opened), &body(thing("x", "o", ID))),
            "test.thing.v1.ThingOpened carries a thing id that is not a canonical UUID: \"x\""
        );
        assert_eq!(
            said(Some(&opened), &body(thing(ID, "o", "y"))),
            "test.thing.v1.ThingOpened carries a parent id that is not a canonical UUID: \"y\""
        );
        assert_eq!(
            said(Some(&opened), &body(thing(ID, "a b", ID))),
            "test.thing.v1.ThingOpened carries an owner id that must not contain spaces or control characters: \"a b\""
        );
        assert_eq!(
            said(Some(&opened), &body(thing(ID, "", ID))),
            "test.thing.v1.ThingOpened carries an owner id that is required: \"\""
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use prost::{Message, Name};

        fn known_types() -> Vec<String> {
            vec![ThingOpened::full_name(), ThingClosed::full_name()]
        }

        fn ce_type() -> impl Strategy<Value = Option<String>> {
            prop_oneof![
                6 => prop::sample::select(known_types()).prop_map(Some),
                1 => Just(Some(String::from("test.other.v1.ThingOpened"))),
                1 => prop::sample::select(known_types())
                    .prop_map(|t| Some(format!("{t}x"))),
                1 => any::<String>().prop_map(Some),
                1 => Just(None),
            ]
        }

        fn id() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
                1 => any::<String>(),
            ]
        }

        /// A stored aggregate with arbitrary fields, its ids of the right
        /// form or not.
        fn state() -> impl Strategy<Value = Thing> {
            (
                id(),
                prop_oneof!["[A-Za-z0-9._-]{1,128}", any::<String>()],
                id(),
                any::<u64>(),
            )
                .prop_map(|(thing_id, owner_id, parent_id, version)| Thing {
                    thing_id,
                    owner_id,
                    parent_id,
                    version,
                })
        }

        /// Event bodies: random bytes, a real event, or a real event cut
        /// short or with one byte changed.
        fn payload() -> impl Strategy<Value = Vec<u8>> {
            let event = state()
                .prop_map(|thing| ThingOpened { thing: Some(thing) }.encode_to_vec())
                .boxed();
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..512),
                event.clone(),
                (
                    event,
                    any::<prop::sample::Index>(),
                    any::<u8>(),
                    any::<bool>()
                )
                    .prop_map(|(mut bytes, at, byte, cut)| {
                        if !bytes.is_empty() {
                            let at = at.index(bytes.len());
                            if cut {
                                bytes.truncate(at);
                            } else {
                                bytes[at] = byte;
                            }
                        }
                        bytes
                    }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 1024,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            /// Any body under any type is an aggregate or a reason, never a
            /// panic; an aggregate only under one of the kind's event types,
            /// decoded as prost decodes that message, and with the ids of an
            /// aggregate orderflow could have written.
            #[test]
            fn any_event_is_an_aggregate_or_a_reason(ce_type in ce_type(), payload in payload()) {
                match Things::decode(ce_type.as_deref(), &payload) {
                    Ok(state) => {
                        let ce_type = ce_type.unwrap_or_default();
                        prop_assert!(known_types().contains(&ce_type));
                        let decoded = ThingOpened::decode(payload.as_slice())
                            .ok()
                            .and_then(|e| e.thing);
                        prop_assert_eq!(Some(&state), decoded.as_ref());
                        prop_assert!(Things::check_identity(&state).is_ok());
                        prop_assert!(identity::is_canonical_uuid(Things::id(&state)));
                        prop_assert!(identity::is_canonical_uuid(&state.parent_id));
                    }
                    Err(reason) => prop_assert!(!reason.to_string().is_empty()),
                }
            }

            /// What a kind writes it reads back, under the same event.
            #[test]
            fn every_event_round_trips(
                n in any::<u128>(),
                owner in "[A-Za-z0-9._-]{1,128}",
                version in any::<u64>(),
                closed in any::<bool>(),
            ) {
                let id = uuid::Uuid::from_u128(n).to_string();
                let state = Thing { version, ..thing(&id, &owner, ID) };
                let event = if closed { ThingEvent::Closed } else { ThingEvent::Opened };
                let (ce_type, body) = Things::encode(event, &state);
                prop_assert_eq!(Things::event_for(&ce_type), Some(event));
                prop_assert_eq!(Things::decode(Some(&ce_type), &body), Ok(state));
            }
        }
    }
}
