package store

import "crypto/subtle"

// outcomeOf is the outcome of an applied INSTALLED or UNINSTALLED.
func outcomeOf(typ string) Outcome {
	if typ == TypeInstalled {
		return OutcomeInstalled
	}
	return OutcomeUninstalled
}

// firstRow is the row created by an install's first event.
func (s *Store) firstRow(rec received, creds *sealed) *installRow {
	r := &installRow{CredentialsVersion: 1, UpdatedAt: s.nowUTC(), LastEventAt: rec.eventAt}
	if rec.typ == TypeInstalled {
		r.Status = StatusInstalled
		r.KeyID, r.ClientIDEnc, r.ClientSecretEnc = &creds.keyID, creds.clientIDEnc, creds.secretEnc
		r.InstalledAt = &rec.eventAt
	} else {
		r.Status = StatusUninstalled
		r.UninstalledAt = &rec.eventAt
	}
	return r
}

// decide applies an INSTALLED or UNINSTALLED to the locked row cur.
func (s *Store) decide(rec received, cur *installRow, creds *sealed) plan {
	if rec.eventAt.Before(cur.LastEventAt) {
		return plan{outcome: OutcomeStale}
	}
	next := *cur
	// A repeat later than the last applied event still moves last_event_at,
	// so an older event delivered after it is stale.
	next.LastEventAt = rec.eventAt
	changed := false
	switch rec.typ {
	case TypeInstalled:
		if cur.Status == StatusInstalled && s.sameCredentials(rec.key, cur, creds) {
			break // a duplicate delivery
		}
		changed = true
		if cur.Status == StatusUninstalled || cur.InstalledAt == nil {
			next.InstalledAt = &rec.eventAt
		}
		next.Status = StatusInstalled
		next.KeyID, next.ClientIDEnc, next.ClientSecretEnc = &creds.keyID, creds.clientIDEnc, creds.secretEnc
		next.UninstalledAt = nil
		next.LastError = nil
	case TypeUninstalled:
		if cur.Status == StatusUninstalled {
			break
		}
		changed = true
		next.Status = StatusUninstalled
		next.KeyID, next.ClientIDEnc, next.ClientSecretEnc = nil, nil, nil
		next.UninstalledAt = &rec.eventAt
		next.LastError = nil
	}
	p := plan{outcome: outcomeOf(rec.typ), notify: changed}
	if changed {
		next.CredentialsVersion++
		next.UpdatedAt = s.nowUTC()
	}
	if changed || !next.LastEventAt.Equal(cur.LastEventAt) {
		p.update = &next
	}
	return p
}

// sameCredentials reports whether cur holds exactly the credentials in
// creds. Stored credentials that no longer open count as different, so a
// fresh INSTALLED repairs them.
func (s *Store) sameCredentials(k InstallKey, cur *installRow, creds *sealed) bool {
	if cur.KeyID == nil {
		return false
	}
	id, secret, err := s.open(k, *cur.KeyID, cur.ClientIDEnc, cur.ClientSecretEnc)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(id.Reveal()), []byte(creds.clientID.Reveal())) == 1 &&
		subtle.ConstantTimeCompare([]byte(secret.Reveal()), []byte(creds.clientSecret.Reveal())) == 1
}
