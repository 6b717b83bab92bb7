//! strata-tests holds only test and benchmark targets.
