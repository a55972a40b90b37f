//! Custom scalars.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

/// A 64-bit log position: serialized as a decimal string, accepted as a string or an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position(pub i64);

#[Scalar(name = "Position")]
impl ScalarType for Position {
    fn parse(value: Value) -> InputValueResult<Self> {
        let n = match &value {
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| InputValueError::custom("Position must be a decimal integer"))?,
            Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| InputValueError::custom("Position must be an integer"))?,
            _ => return Err(InputValueError::expected_type(value)),
        };
        if n < 0 {
            return Err(InputValueError::custom("Position must not be negative"));
        }
        Ok(Position(n))
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}
