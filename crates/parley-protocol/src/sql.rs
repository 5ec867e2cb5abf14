//! sqlx's `Type`/`Encode`/`Decode` for [`Id`] and `Timestamp` (feature `sqlx`, off by
//! default): both are kept as signed 64-bit integers (SQLite `INTEGER`, PostgreSQL `bigint`),
//! so a query binds `id` itself, never `id.0 as i64`.
//!
//! The impls hold for every database whose `i64` has them (written once, not per driver);
//! PostgreSQL arrays (`bigint[]`, for `= ANY($1)` and `UNNEST`) get `PgHasArrayType`.
//!
//! - Encoding an [`Id`] above [`Id::MAX`] is an error (the query fails with it), never a
//!   wrap to a negative number. Only an ID built in code can be one: parsing refuses them.
//! - Decoding a negative integer as an [`Id`] is an error (corrupt data: no ID is negative).
//! - A `Timestamp` is any `i64` (milliseconds since the Unix epoch) both ways: its impls
//!   come from sqlx's transparent derive on the type itself.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use crate::Id;

/// Why an [`Id`] cannot be stored or read: it is outside `0..=Id::MAX`.
#[derive(Debug)]
struct IdOutOfRange(String);

impl std::fmt::Display for IdOutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ID {} is outside 0..={}", self.0, Id::MAX)
    }
}

impl std::error::Error for IdOutOfRange {}

impl Id {
    /// The ID as the stores keep it; [`IdOutOfRange`] above [`Id::MAX`].
    fn to_sql(self) -> Result<i64, IdOutOfRange> {
        self.to_i64()
            .ok_or_else(|| IdOutOfRange(self.0.to_string()))
    }
}

impl<DB: Database> Type<DB> for Id
where
    i64: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <i64 as Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <i64 as Type<DB>>::compatible(ty)
    }
}

impl<'q, DB: Database> Encode<'q, DB> for Id
where
    i64: Encode<'q, DB>,
{
    fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<'q, DB>>::encode(self.to_sql()?, buf)
    }

    fn size_hint(&self) -> usize {
        std::mem::size_of::<i64>()
    }
}

impl<'r, DB: Database> Decode<'r, DB> for Id
where
    i64: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let v = <i64 as Decode<DB>>::decode(value)?;
        let id = u64::try_from(v).map_err(|_| IdOutOfRange(v.to_string()))?;
        Ok(Id(id))
    }
}

impl sqlx::postgres::PgHasArrayType for Id {
    fn array_type_info() -> sqlx::postgres::PgTypeInfo {
        <i64 as sqlx::postgres::PgHasArrayType>::array_type_info()
    }
}
