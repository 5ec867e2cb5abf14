//! Values the shared SQL binds that sqlx has no type for: a list of IDs ([`IdList`]) and a
//! `u64` kept in a signed 64-bit column ([`Unsigned`]).

use parley_protocol::Id;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgHasArrayType, PgTypeInfo};
use sqlx::{Database, Encode, Postgres, Sqlite, Type};

/// A list of IDs bound as one argument, matched by
/// [`Dialect::in_ids`](super::Dialect::in_ids): SQLite gets a JSON array of numbers (read by
/// `json_each`), PostgreSQL a `bigint[]`. An ID above `Id::MAX` fails the query on both.
#[derive(Debug, Clone, Copy)]
pub struct IdList<'a>(pub &'a [Id]);

impl IdList<'_> {
    /// `[1,2,3]`; an error at the first ID above `Id::MAX`.
    fn to_json(self) -> Result<String, BoxDynError> {
        let mut s = String::with_capacity(self.0.len() * 20 + 2);
        s.push('[');
        for (i, id) in self.0.iter().enumerate() {
            let v = id
                .to_i64()
                .ok_or_else(|| format!("ID {id} is outside 0..={}", Id::MAX))?;
            if i > 0 {
                s.push(',');
            }
            s.push_str(&v.to_string());
        }
        s.push(']');
        Ok(s)
    }
}

impl Type<Sqlite> for IdList<'_> {
    fn type_info() -> <Sqlite as Database>::TypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl<'q> Encode<'q, Sqlite> for IdList<'_> {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, Sqlite>>::encode(self.to_json()?, buf)
    }
}

impl Type<Postgres> for IdList<'_> {
    fn type_info() -> PgTypeInfo {
        <Vec<Id> as Type<Postgres>>::type_info()
    }
}

impl<'q> Encode<'q, Postgres> for IdList<'_> {
    fn encode_by_ref(
        &self,
        buf: &mut <Postgres as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <&[Id] as Encode<'q, Postgres>>::encode_by_ref(&self.0, buf)
    }
}

/// A `u64` (a seq, a size in bytes) bound to a signed 64-bit column; one above `i64::MAX`
/// fails the query instead of wrapping. (Rows read such a column back with
/// `#[sqlx(try_from = "i64")]`, which refuses a negative value.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsigned(pub u64);

impl<DB: Database> Type<DB> for Unsigned
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

impl<'q, DB: Database> Encode<'q, DB> for Unsigned
where
    i64: Encode<'q, DB>,
{
    fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
        let v = i64::try_from(self.0).map_err(|_| format!("{} is beyond i64::MAX", self.0))?;
        <i64 as Encode<'q, DB>>::encode(v, buf)
    }
}

impl PgHasArrayType for Unsigned {
    fn array_type_info() -> PgTypeInfo {
        <i64 as PgHasArrayType>::array_type_info()
    }
}
