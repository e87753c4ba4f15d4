package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/stepraft/stepraft/node"
)

// server serves one member's HTTP API.
type server struct {
	n       *node.Node
	st      *store
	id      uint64
	http    string        // this member's HTTP address
	timeout time.Duration // per request
}

func (s *server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /kv/{key...}", s.put)
	mux.HandleFunc("GET /kv/{key...}", s.get)
	mux.HandleFunc("DELETE /kv/{key...}", s.del)
	mux.HandleFunc("GET /status", s.status)
	mux.Handle("GET /metrics", s.n.MetricsHandler())
	mux.HandleFunc("POST /members", s.addMember)
	mux.HandleFunc("DELETE /members/{id}", s.removeMember)
	mux.HandleFunc("GET /backup", s.backup)
	return mux
}

// apiError is the JSON body of every error answer. Applied is false when
// the command certainly did not and will not apply, "unknown" when it may.
type apiError struct {
	Error   string `json:"error"`
	Applied any    `json:"applied"`
}

func writeError(w http.ResponseWriter, code int, applied any, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(apiError{Error: msg, Applied: applied})
}

// writeNodeError maps a node error to an answer.
func writeNodeError(w http.ResponseWriter, err error) {
	var nl *node.NotLeaderError
	switch {
	case errors.Is(err, node.ErrOutcomeUnknown), errors.Is(err, node.ErrStopped):
		writeError(w, http.StatusGatewayTimeout, "unknown", err.Error())
	case errors.Is(err, node.ErrProposalDropped), errors.Is(err, node.ErrNoLeader), errors.As(err, &nl):
		writeError(w, http.StatusServiceUnavailable, false, err.Error())
	case errors.Is(err, node.ErrTooLarge), errors.Is(err, node.ErrConfig):
		writeError(w, http.StatusBadRequest, false, err.Error())
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		writeError(w, http.StatusServiceUnavailable, false, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "unknown", err.Error())
	}
}

// key returns the request's key, or answers 400.
func key(w http.ResponseWriter, r *http.Request) (string, bool) {
	k := r.PathValue("key")
	switch {
	case k == "":
		writeError(w, http.StatusBadRequest, false, "no key")
		return "", false
	case len(k) > maxKeyBytes:
		writeError(w, http.StatusBadRequest, false, fmt.Sprintf("key of %d bytes, over %d", len(k), maxKeyBytes))
		return "", false
	}
	return k, true
}

// propose replicates cmd and answers 204 once it is applied here.
func (s *server) propose(w http.ResponseWriter, r *http.Request, cmd []byte) {
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	res, err := s.n.Propose(ctx, cmd)
	if err == nil {
		if e, ok := res.(error); ok {
			err = e
		}
	}
	if err != nil {
		writeNodeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) put(w http.ResponseWriter, r *http.Request) {
	k, ok := key(w, r)
	if !ok {
		return
	}
	v, err := io.ReadAll(io.LimitReader(r.Body, maxValueBytes+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, false, "reading the value: "+err.Error())
		return
	}
	if len(v) > maxValueBytes {
		writeError(w, http.StatusBadRequest, false, fmt.Sprintf("value over %d bytes", maxValueBytes))
		return
	}
	s.propose(w, r, encodePut(k, v))
}

func (s *server) del(w http.ResponseWriter, r *http.Request) {
	if k, ok := key(w, r); ok {
		s.propose(w, r, encodeDelete(k))
	}
}

func (s *server) get(w http.ResponseWriter, r *http.Request) {
	k, ok := key(w, r)
	if !ok {
		return
	}
	var v any
	var err error
	if r.URL.Query().Get("stale") == "1" {
		v, err = s.n.StaleRead([]byte(k))
	} else {
		ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
		defer cancel()
		v, err = s.n.Read(ctx, []byte(k))
	}
	if err != nil {
		writeNodeError(w, err)
		return
	}
	b, found := v.([]byte)
	if !found {
		writeError(w, http.StatusNotFound, false, "no such key")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// memberJSON is a member in /status and in POST /members.
type memberJSON struct {
	ID      uint64 `json:"id"`
	Raft    string `json:"raft"`
	HTTP    string `json:"http,omitempty"`
	Learner bool   `json:"learner"`
}

type statusJSON struct {
	ID        uint64       `json:"id"`
	ClusterID string       `json:"cluster_id"`
	Role      string       `json:"role"`
	Term      uint64       `json:"term"`
	Leader    uint64       `json:"leader"`
	Commit    uint64       `json:"commit"`
	Applied   uint64       `json:"applied"`
	Members   []memberJSON `json:"members"`
}

func (s *server) status(w http.ResponseWriter, r *http.Request) {
	st := s.n.Status()
	addrs := s.st.httpAddrs()
	addrs[s.id] = s.http
	out := statusJSON{ID: s.id, ClusterID: strconv.FormatUint(s.n.ClusterID(), 10), Role: st.Role.String(), Term: uint64(st.Term),
		Leader: uint64(st.Leader), Commit: uint64(st.Commit), Applied: uint64(st.Applied), Members: []memberJSON{}}
	if st.Role == 0 {
		out.Role = "follower"
	}
	for _, m := range st.Members {
		out.Members = append(out.Members, memberJSON{ID: uint64(m.ID), Raft: m.Addr, HTTP: addrs[uint64(m.ID)], Learner: m.Learner})
	}
	slices.SortFunc(out.Members, func(a, b memberJSON) int { return int(a.ID) - int(b.ID) })
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func (s *server) addMember(w http.ResponseWriter, r *http.Request) {
	var m memberJSON
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		writeError(w, http.StatusBadRequest, false, "bad JSON: "+err.Error())
		return
	}
	if m.ID == 0 || m.Raft == "" || len(m.Raft) > maxKeyBytes || len(m.HTTP) > maxKeyBytes {
		writeError(w, http.StatusBadRequest, false, "a member needs an id and a raft address")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	if m.HTTP != "" {
		if _, err := s.n.Propose(ctx, encodeSetHTTP(m.ID, m.HTTP)); err != nil {
			writeNodeError(w, err)
			return
		}
	}
	var err error
	if m.Learner {
		err = s.n.AddLearner(ctx, node.NodeID(m.ID), m.Raft)
	} else {
		err = s.n.AddVoter(ctx, node.NodeID(m.ID), m.Raft)
	}
	if err != nil {
		writeNodeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) removeMember(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		writeError(w, http.StatusBadRequest, false, "bad member id")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	if err := s.n.RemoveMember(ctx, node.NodeID(id)); err != nil {
		writeNodeError(w, err)
		return
	}
	s.n.Propose(ctx, encodeForgetHTTP(id)) // best effort: only /status shows it
	w.WriteHeader(http.StatusNoContent)
}

// backup streams a backup of the state (node.Backup) for `kvstore backup`.
func (s *server) backup(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Minute)
	defer cancel()
	w.Header().Set("Content-Type", "application/octet-stream")
	if _, err := s.n.Backup(ctx, w); err != nil {
		// Headers may be out already; the checksum will not match.
		writeError(w, http.StatusInternalServerError, false, err.Error())
	}
}
