package api

import (
	_ "embed"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/irisx-broker/irisx-broker/store"
)

// adminIdentityPath is the "Identity and callbacks seen" view.
const adminIdentityPath = "/admin/identity"

// profilesShown is how many profiles of each verdict the view reads.
const profilesShown = 50

//go:embed admin_identity.html
var adminIdentityHTML string

// adminIdentityTemplates are the admin templates plus the identity view,
// which shares their head, foot and styles.
var adminIdentityTemplates = template.Must(template.Must(adminTemplates.Clone()).Funcs(template.FuncMap{
	"dur":  adminDuration,
	"join": func(s []string) string { return strings.Join(s, " ") },
}).Parse(adminIdentityHTML))

// adminIdentityHandler serves the view from a ProfileStore.
type adminIdentityHandler struct {
	admin    *adminHandler
	profiles ProfileStore
}

// adminSeen is the data of the identity view.
type adminSeen struct {
	Accepted, Refused []adminShape
	Latest            []store.IdentityProfile
}

// adminShape is one group of profiles that share a shape.
type adminShape struct {
	Iss           string
	Aud           []string
	Claims        []string
	MoreClaims    int
	Alg, Typ      string
	UnknownFields []string
	BodySeen      bool // false: every token of the group was refused before the body was read
	Count         int
	Kids          []string
	Rules         []string
	MinAge        *time.Duration
	MaxAge        *time.Duration
	Lifetime      *time.Duration
	LastSeen      time.Time
}

func (h *adminIdentityHandler) show(c echo.Context) error {
	ctx := c.Request().Context()
	accepted, err := h.profiles.ListIdentityProfiles(ctx, store.VerdictAccepted, profilesShown)
	if err != nil {
		return h.admin.renderError(c, "list identity profiles", err)
	}
	refused, err := h.profiles.ListIdentityProfiles(ctx, store.VerdictRefused, profilesShown)
	if err != nil {
		return h.admin.renderError(c, "list identity profiles", err)
	}
	latest := append(slices.Clone(accepted), refused...)
	slices.SortFunc(latest, func(a, b store.IdentityProfile) int { return b.SeenAt.Compare(a.SeenAt) })
	if len(latest) > profilesShown {
		latest = latest[:profilesShown]
	}
	data := adminSeen{Accepted: groupShapes(accepted), Refused: groupShapes(refused), Latest: latest}
	var buf strings.Builder
	if err := adminIdentityTemplates.ExecuteTemplate(&buf, "identity", data); err != nil {
		return newError(http.StatusInternalServerError, codeInternal, "internal error", err)
	}
	return c.HTML(http.StatusOK, buf.String())
}

// groupShapes groups profiles (newest first) by iss, aud, claim names,
// alg, typ and unknown body fields, keeping the first-seen order.
func groupShapes(ps []store.IdentityProfile) []adminShape {
	var out []adminShape
	index := map[string]int{}
	for _, p := range ps {
		key := strings.Join([]string{p.Iss, strings.Join(p.Aud, "\x00"), strings.Join(p.Claims, "\x00"),
			strconv.Itoa(p.ClaimCount), p.Alg, p.Typ, strings.Join(p.UnknownFields, "\x00")}, "\x01")
		i, ok := index[key]
		if !ok {
			i = len(out)
			index[key] = i
			out = append(out, adminShape{Iss: p.Iss, Aud: p.Aud, Claims: p.Claims,
				MoreClaims: p.ClaimCount - len(p.Claims), Alg: p.Alg, Typ: p.Typ,
				UnknownFields: p.UnknownFields, LastSeen: p.SeenAt, Lifetime: p.Lifetime})
		}
		g := &out[i]
		g.Count++
		g.BodySeen = g.BodySeen || p.UnknownFields != nil
		if p.Kid != "" && !slices.Contains(g.Kids, p.Kid) {
			g.Kids = append(g.Kids, p.Kid)
		}
		if p.Rule != "" && !slices.Contains(g.Rules, p.Rule) {
			g.Rules = append(g.Rules, p.Rule)
		}
		if p.Age != nil {
			if g.MinAge == nil || *p.Age < *g.MinAge {
				g.MinAge = p.Age
			}
			if g.MaxAge == nil || *p.Age > *g.MaxAge {
				g.MaxAge = p.Age
			}
		}
	}
	return out
}

// adminDuration shows an optional duration; "—" when unknown.
func adminDuration(d *time.Duration) string {
	if d == nil {
		return "—"
	}
	return d.Round(time.Millisecond).String()
}
