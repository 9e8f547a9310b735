//! `orderflow.admin.v1.DeadLetterService`: list dead letters and replay one
//! once its cause is fixed. Both services serve it; the stream is shared.

use orderflow_eventbus::{
    JetStream,
    dead_letters::{DeadLetterRecord, DeadLetters},
    envelope::headers,
};
use orderflow_proto::admin::v1::{
    DeadLetter, ListDeadLettersRequest, ListDeadLettersResponse, ReplayDeadLetterRequest,
    ReplayDeadLetterResponse,
    dead_letter_service_server::{DeadLetterService, DeadLetterServiceServer},
};
use tonic::{Request, Response, Status};

use crate::{
    paging,
    status::{FieldViolation, check_token, invalid_argument, page_size},
};

/// The service's full name, for reflection.
pub use orderflow_proto::admin::v1::dead_letter_service_server::SERVICE_NAME;

/// The path prefix of every dead-letter admin method: admin-only when API
/// calls are authenticated (replaying a message re-runs its effects).
pub const ADMIN_PATHS: &str = "/orderflow.admin.v1.DeadLetterService/";

/// The dead-letter admin API.
#[derive(Clone)]
pub struct DeadLetterAdmin {
    dead_letters: DeadLetters,
}

/// The gRPC service over the DEADLETTERS stream of `js`.
pub fn service(js: JetStream) -> DeadLetterServiceServer<DeadLetterAdmin> {
    DeadLetterServiceServer::new(DeadLetterAdmin {
        dead_letters: DeadLetters::new(js),
    })
}

fn to_proto(record: DeadLetterRecord) -> DeadLetter {
    DeadLetter {
        sequence: record.sequence,
        reason: record.header(headers::DEAD_LETTER_REASON).to_owned(),
        original_stream: record.header(headers::ORIGINAL_STREAM).to_owned(),
        original_subject: record.header(headers::ORIGINAL_SUBJECT).to_owned(),
        original_sequence: record
            .header(headers::ORIGINAL_SEQUENCE)
            .parse()
            .unwrap_or(0),
        consumer: record.header(headers::ORIGINAL_CONSUMER).to_owned(),
        delivery_count: record.header(headers::DELIVERY_COUNT).parse().unwrap_or(0),
        ce_type: record.header(headers::CE_TYPE).to_owned(),
        ce_id: record.header(headers::CE_ID).to_owned(),
        dead_letter_time: Some(prost_types::Timestamp {
            seconds: record.time.0,
            nanos: record.time.1,
        }),
        payload: record.payload.to_vec(),
    }
}

#[tonic::async_trait]
impl DeadLetterService for DeadLetterAdmin {
    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Vec::new();
        let size = page_size(
            request.page_size,
            paging::DEFAULT_PAGE_SIZE,
            paging::MAX_PAGE_SIZE,
            &mut violations,
        );
        check_token("consumer", &request.consumer, 128, false, &mut violations);
        if request.consumer.contains(['.', '*', '>']) {
            violations.push(FieldViolation::new(
                "consumer",
                "must be a durable consumer name, without '.', '*' or '>'",
            ));
        }
        let after = paging::decode(&request.page_token, &request.consumer).unwrap_or_else(|v| {
            violations.push(v);
            None
        });
        let after = match after.map(|a| a.parse::<u64>()) {
            None => 0,
            Some(Ok(after)) => after,
            Some(Err(_)) => {
                violations.push(FieldViolation::new("page_token", "is not a valid token"));
                0
            }
        };
        if !violations.is_empty() {
            return Err(invalid_argument(&violations));
        }
        let consumer = (!request.consumer.is_empty()).then_some(request.consumer.as_str());
        let (records, more) = self
            .dead_letters
            .list(consumer, after, size)
            .await
            .map_err(|e| Status::unavailable(format!("{e}; retry shortly")))?;
        let next_page_token = match (more, records.last()) {
            (true, Some(last)) => paging::encode(&request.consumer, &last.sequence.to_string()),
            _ => String::new(),
        };
        Ok(Response::new(ListDeadLettersResponse {
            dead_letters: records.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn replay_dead_letter(
        &self,
        request: Request<ReplayDeadLetterRequest>,
    ) -> Result<Response<ReplayDeadLetterResponse>, Status> {
        let sequence = request.into_inner().sequence;
        if sequence == 0 {
            return Err(invalid_argument(&[FieldViolation::new(
                "sequence",
                "is required: the dead letter's sequence from ListDeadLetters",
            )]));
        }
        match self.dead_letters.replay(sequence).await {
            Ok(Some((record, subject))) => {
                tracing::info!(sequence, %subject, "dead letter replayed");
                Ok(Response::new(ReplayDeadLetterResponse {
                    dead_letter: Some(to_proto(record)),
                    replay_subject: subject,
                }))
            }
            Ok(None) => Err(Status::not_found(format!(
                "no dead letter {sequence}: it was replayed already, or never existed"
            ))),
            Err(e) => Err(Status::unavailable(format!("{e}; retry shortly"))),
        }
    }
}
