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

/// Digits after the decimal point of `currency`'s minor unit (ISO 4217);
/// two unless listed.
fn minor_unit_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// `amount` in whole minor units of its currency (cents for USD, yen for
/// JPY), as card gateways take it, or why it has none: not a whole number
/// of them, or not positive.
pub fn minor_units(amount: &Money) -> Result<u64, String> {
    let digits = minor_unit_digits(amount.currency_code());
    let per_minor = 10i128.pow(9 - digits);
    let nanos = amount.total_nanos();
    if nanos % per_minor != 0 {
        return Err(format!(
            "amount {amount} is not a whole number of {}'s minor units",
            amount.currency_code()
        ));
    }
    u64::try_from(nanos / per_minor)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("amount {amount} is not a positive amount the gateway can charge"))
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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Currencies: valid codes mostly, and anything.
        fn currency() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => Just(String::from("EUR")),
                1 => Just(String::from("USD")),
                1 => "[A-Z]{3}",
                2 => any::<String>(),
            ]
        }

        fn units() -> impl Strategy<Value = i64> {
            prop_oneof![
                prop::sample::select(vec![
                    i64::MIN,
                    i64::MIN + 1,
                    -1,
                    0,
                    1,
                    i64::MAX - 1,
                    i64::MAX
                ]),
                any::<i64>(),
            ]
        }

        fn nanos() -> impl Strategy<Value = i32> {
            prop_oneof![
                prop::sample::select(vec![
                    i32::MIN,
                    -1_000_000_000,
                    -999_999_999,
                    -1,
                    0,
                    1,
                    999_999_999,
                    1_000_000_000,
                    i32::MAX,
                ]),
                -999_999_999..=999_999_999i32,
                any::<i32>(),
            ]
        }

        /// Valid amounts of one of two currencies, extremes included.
        fn money() -> impl Strategy<Value = Money> {
            (
                prop::sample::select(vec!["EUR", "USD"]),
                units(),
                prop_oneof![Just(999_999_999i32), 0..=999_999_999i32],
            )
                .prop_map(|(currency, units, nanos)| {
                    // nanos takes the sign of units, as google.type.Money requires.
                    let nanos = if units < 0 { -nanos } else { nanos };
                    Money::new(currency, units, nanos).unwrap_or_else(|e| panic!("{e}"))
                })
        }

        /// What `fits` accepts: whole units within `i64`.
        fn fits(nanos: i128) -> bool {
            i64::try_from(nanos / NANOS_PER_UNIT).is_ok()
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 1024,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn new_accepts_exactly_the_valid_fields_and_round_trips(
                currency in currency(),
                units in units(),
                nanos in nanos(),
            ) {
                let valid_currency =
                    currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase());
                let valid_nanos = (-999_999_999..=999_999_999).contains(&nanos);
                let same_sign = !((units > 0 && nanos < 0) || (units < 0 && nanos > 0));
                match Money::new(&currency, units, nanos) {
                    Ok(money) => {
                        prop_assert!(valid_currency && valid_nanos && same_sign);
                        prop_assert_eq!(money.parts(), (currency, units, nanos));
                        prop_assert_eq!(
                            money.total_nanos(),
                            i128::from(units) * NANOS_PER_UNIT + i128::from(nanos)
                        );
                        let _ = money.to_string();
                    }
                    Err(MoneyError::Currency(_)) => prop_assert!(!valid_currency),
                    Err(MoneyError::NanosRange(_)) => prop_assert!(valid_currency && !valid_nanos),
                    Err(MoneyError::SignMismatch { .. }) => {
                        prop_assert!(valid_currency && valid_nanos && !same_sign)
                    }
                    Err(other) => prop_assert!(false, "new answered {:?}", other),
                }
            }

            #[test]
            fn sums_are_exact_or_an_error_never_a_wrap(a in money(), b in money()) {
                let exact = a.total_nanos() + b.total_nanos();
                match a.checked_add(&b) {
                    Ok(sum) => {
                        prop_assert_eq!(a.currency_code(), b.currency_code());
                        prop_assert_eq!(sum.total_nanos(), exact);
                        prop_assert_eq!(sum.currency_code(), a.currency_code());
                        // What `parts` gives back is valid money again.
                        let (currency, units, nanos) = sum.parts();
                        prop_assert_eq!(Money::new(&currency, units, nanos), Ok(sum));
                    }
                    Err(MoneyError::CurrencyMismatch(..)) => {
                        prop_assert_ne!(a.currency_code(), b.currency_code())
                    }
                    Err(MoneyError::Overflow) => {
                        prop_assert_eq!(a.currency_code(), b.currency_code());
                        prop_assert!(!fits(exact));
                    }
                    Err(other) => prop_assert!(false, "checked_add answered {:?}", other),
                }
            }

            #[test]
            fn products_are_exact_or_an_error_never_a_wrap(
                a in money(),
                quantity in prop_oneof![
                    prop::sample::select(vec![0u32, 1, u32::MAX]),
                    0..=10_000u32,
                    any::<u32>(),
                ],
            ) {
                let exact = a.total_nanos().checked_mul(i128::from(quantity));
                match a.checked_mul(quantity) {
                    Ok(product) => {
                        prop_assert_eq!(Some(product.total_nanos()), exact);
                        let (currency, units, nanos) = product.parts();
                        prop_assert_eq!(Money::new(&currency, units, nanos), Ok(product));
                    }
                    Err(MoneyError::Overflow) => prop_assert!(exact.is_none_or(|n| !fits(n))),
                    Err(other) => prop_assert!(false, "checked_mul answered {:?}", other),
                }
            }

            #[test]
            fn comparisons_and_display_never_panic(a in money(), limit in any::<u64>()) {
                prop_assert_eq!(
                    a.exceeds_units(limit),
                    a.total_nanos() > i128::from(limit) * NANOS_PER_UNIT
                );
                prop_assert_eq!(a.is_positive(), a.total_nanos() > 0);
                prop_assert!(a.to_string().ends_with(a.currency_code()));
                prop_assert_eq!(Money::zero_of(&a).total_nanos(), 0);
            }
        }
    }

    #[test]
    fn decline_limit_compares_exactly() -> Result<(), MoneyError> {
        assert!(!Money::new("EUR", 10_000, 0)?.exceeds_units(10_000));
        assert!(Money::new("EUR", 10_000, 1)?.exceeds_units(10_000));
        Ok(())
    }

    fn m(currency: &str, units: i64, nanos: i32) -> Money {
        Money::new(currency, units, nanos).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn amounts_become_minor_units_of_their_currency() {
        assert_eq!(minor_units(&m("EUR", 24, 500_000_000)), Ok(2450));
        assert_eq!(minor_units(&m("JPY", 1200, 0)), Ok(1200));
        assert_eq!(minor_units(&m("KWD", 1, 5_000_000)), Ok(1005));
        assert!(minor_units(&m("EUR", 1, 5_000_000)).is_err(), "half a cent");
        assert!(minor_units(&m("JPY", 1, 500_000_000)).is_err());
        assert!(minor_units(&m("EUR", 0, 0)).is_err());
    }
}
