//! Exact money: an amount in nano-units of one currency.
//!
//! Amounts arrive as `google.type.Money` (`units` + `nanos`). They are held
//! here as one `i128` count of nano-units, so sums and products are exact and
//! every operation is checked: an overflow is an error the caller turns into
//! INVALID_ARGUMENT, never a wrap-around or a panic. Converting back to
//! `units`/`nanos` checks that the units fit in an `i64`.
#![forbid(unsafe_code)]

use std::fmt;

const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// Why an amount is not valid money.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The currency is not three upper-case letters.
    #[error("must be a three-letter ISO 4217 code like EUR, got {0:?}")]
    Currency(String),
    /// `nanos` is outside -999,999,999..=999,999,999.
    #[error("nanos must be between -999999999 and 999999999, got {0}")]
    NanosRange(i32),
    /// `units` and `nanos` have opposite signs.
    #[error("units and nanos must have the same sign, got units={units} nanos={nanos}")]
    SignMismatch {
        /// The units given.
        units: i64,
        /// The nanos given.
        nanos: i32,
    },
    /// Two amounts of different currencies were combined.
    #[error("cannot combine {0} with {1}")]
    CurrencyMismatch(String, String),
    /// The result does not fit.
    #[error("amount too large")]
    Overflow,
}

/// A validated amount of one currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Money {
    currency: String,
    nanos: i128,
}

impl Money {
    /// Validates `google.type.Money` fields.
    pub fn new(currency_code: &str, units: i64, nanos: i32) -> Result<Self, MoneyError> {
        if currency_code.len() != 3 || !currency_code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(MoneyError::Currency(currency_code.to_owned()));
        }
        if !(-999_999_999..=999_999_999).contains(&nanos) {
            return Err(MoneyError::NanosRange(nanos));
        }
        if (units > 0 && nanos < 0) || (units < 0 && nanos > 0) {
            return Err(MoneyError::SignMismatch { units, nanos });
        }
        Ok(Self {
            currency: currency_code.to_owned(),
            nanos: i128::from(units) * NANOS_PER_UNIT + i128::from(nanos),
        })
    }

    /// Zero of `currency` (assumed valid: taken from a validated amount).
    pub fn zero_of(other: &Money) -> Self {
        Self {
            currency: other.currency.clone(),
            nanos: 0,
        }
    }

    /// The ISO 4217 code.
    pub fn currency_code(&self) -> &str {
        &self.currency
    }

    /// The amount in nano-units.
    pub fn total_nanos(&self) -> i128 {
        self.nanos
    }

    /// Whether the amount is above zero.
    pub fn is_positive(&self) -> bool {
        self.nanos > 0
    }

    /// Whether the amount is strictly above `units` whole units.
    pub fn exceeds_units(&self, units: u64) -> bool {
        self.nanos > i128::from(units) * NANOS_PER_UNIT
    }

    /// `self + other`, same currency only.
    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(
                self.currency.clone(),
                other.currency.clone(),
            ));
        }
        let nanos = self
            .nanos
            .checked_add(other.nanos)
            .ok_or(MoneyError::Overflow)?;
        Self::fits(Self {
            currency: self.currency.clone(),
            nanos,
        })
    }

    /// `self × quantity`.
    pub fn checked_mul(&self, quantity: u32) -> Result<Money, MoneyError> {
        let nanos = self
            .nanos
            .checked_mul(i128::from(quantity))
            .ok_or(MoneyError::Overflow)?;
        Self::fits(Self {
            currency: self.currency.clone(),
            nanos,
        })
    }

    fn fits(money: Money) -> Result<Money, MoneyError> {
        i64::try_from(money.nanos / NANOS_PER_UNIT)
            .map(|_| money)
            .map_err(|_| MoneyError::Overflow)
    }

    /// The `google.type.Money` fields: (currency_code, units, nanos).
    pub fn parts(&self) -> (String, i64, i32) {
        // Both conversions hold by construction (`fits`); the fallbacks are
        // unreachable but keep this free of panics.
        let units = i64::try_from(self.nanos / NANOS_PER_UNIT).unwrap_or(i64::MAX);
        let nanos = i32::try_from(self.nanos % NANOS_PER_UNIT).unwrap_or(0);
        (self.currency.clone(), units, nanos)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        let units = abs / NANOS_PER_UNIT.unsigned_abs();
        let nanos = abs % NANOS_PER_UNIT.unsigned_abs();
        write!(f, "{sign}{units}.{nanos:09} {}", self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_amounts_round_trip() -> Result<(), MoneyError> {
        let m = Money::new("EUR", 12, 500_000_000)?;
        assert_eq!(m.parts(), ("EUR".into(), 12, 500_000_000));
        let n = Money::new("EUR", -1, -750_000_000)?;
        assert_eq!(n.parts(), ("EUR".into(), -1, -750_000_000));
        Ok(())
    }

    #[test]
    fn invalid_amounts_are_rejected() {
        assert!(matches!(
            Money::new("eur", 1, 0),
            Err(MoneyError::Currency(_))
        ));
        assert!(matches!(
            Money::new("EURO", 1, 0),
            Err(MoneyError::Currency(_))
        ));
        assert_eq!(
            Money::new("EUR", 1, 1_000_000_000),
            Err(MoneyError::NanosRange(1_000_000_000))
        );
        assert!(matches!(
            Money::new("EUR", 1, -1),
            Err(MoneyError::SignMismatch { .. })
        ));
        assert!(matches!(
            Money::new("EUR", -1, 1),
            Err(MoneyError::SignMismatch { .. })
        ));
    }

    #[test]
    fn sums_and_products_are_exact() -> Result<(), MoneyError> {
        let price = Money::new("EUR", 12, 500_000_000)?;
        let line = price.checked_mul(2)?;
        assert_eq!(line.parts(), ("EUR".into(), 25, 0));
        let total = line.checked_add(&Money::new("EUR", 0, 999_999_999)?)?;
        assert_eq!(total.parts(), ("EUR".into(), 25, 999_999_999));
        assert_eq!(total.to_string(), "25.999999999 EUR");
        Ok(())
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() -> Result<(), MoneyError> {
        let max = Money::new("EUR", i64::MAX, 999_999_999)?;
        assert_eq!(max.checked_mul(2), Err(MoneyError::Overflow));
        assert_eq!(max.checked_add(&max), Err(MoneyError::Overflow));
        assert_eq!(max.checked_mul(u32::MAX), Err(MoneyError::Overflow));
        Ok(())
    }

    #[test]
    fn currencies_never_mix() -> Result<(), MoneyError> {
        let eur = Money::new("EUR", 1, 0)?;
        let usd = Money::new("USD", 1, 0)?;
        assert!(matches!(
            eur.checked_add(&usd),
            Err(MoneyError::CurrencyMismatch(..))
        ));
        Ok(())
    }

    #[test]
    fn decline_limit_compares_exactly() -> Result<(), MoneyError> {
        assert!(!Money::new("EUR", 10_000, 0)?.exceeds_units(10_000));
        assert!(Money::new("EUR", 10_000, 1)?.exceeds_units(10_000));
        Ok(())
    }
}
